#include "render/gl_driver.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace loopy::render {
namespace {

GlDriverBinding bind_gl_driver() {
    const char* env = std::getenv("LOOPY_GL_DEEPBIND");
    if (env && std::strcmp(env, "0") == 0) return GlDriverBinding::Default;
    const bool forced = env && std::strcmp(env, "1") == 0;
    if (!forced && !llvm_c_api_is_global()) return GlDriverBinding::Default;
#if defined(__SANITIZE_ADDRESS__)
    return GlDriverBinding::Unavailable;  // ASan refuses RTLD_DEEPBIND
#else
    // The handles stay open for the process: GLVND's own dlopen later finds these libraries
    // loaded and keeps their bindings. GLX for X11, EGL for Wayland; both load libgallium.
    bool loaded = false;
    for (const char* name : {"libGLX_mesa.so.0", "libEGL_mesa.so.0"})
        loaded = dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND) != nullptr || loaded;
    return loaded ? GlDriverBinding::DeepBound : GlDriverBinding::Unavailable;
#endif
}

}  // namespace

bool llvm_c_api_is_global() {
    // Functions llvmpipe calls first (the native target's set-up) and one more of the C API.
    for (const char* name :
         {"LLVMInitializeX86Target", "LLVMInitializeAArch64Target", "LLVMCloneModule"})
        if (dlsym(RTLD_DEFAULT, name)) return true;
    return false;
}

GlDriverBinding isolate_gl_driver() {
    static const GlDriverBinding binding = bind_gl_driver();
    return binding;
}

}  // namespace loopy::render
