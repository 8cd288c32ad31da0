#pragma once
// Mesa's OpenGL drivers (llvmpipe, radeonsi) call LLVM through its C API. Some LibTorch builds link
// a static LLVM and export part of that API (Debian trixie's 2.6; pytorch/pytorch#96060). In a
// process that links such a LibTorch, Mesa's calls bind to LibTorch's LLVM instead of Mesa's own
// libLLVM, and creating a GL context crashes (seen in gui_studio on trixie, llvmpipe).
// isolate_gl_driver() loads Mesa's GL libraries before any context, with RTLD_DEEPBIND, so that
// they look up LLVM in their own dependencies first. FrameViewport calls it.

namespace loopy::render {

enum class GlDriverBinding {
    Default,      // nothing done: no LLVM C API in the process's global symbols
    DeepBound,    // Mesa's GL libraries loaded with RTLD_DEEPBIND
    Unavailable,  // asked for, but no Mesa GL library was found (or a sanitizer build)
};

// Whether a library already loaded (LibTorch) exports LLVM's C API.
bool llvm_c_api_is_global();

// Once per process; later calls return the first result. LOOPY_GL_DEEPBIND=1 forces the deep
// binding, LOOPY_GL_DEEPBIND=0 never binds; otherwise it binds when llvm_c_api_is_global().
GlDriverBinding isolate_gl_driver();

}  // namespace loopy::render
