# LibTorch 2.x ships its own fmt (12.x) in its include folder, which the compiler searches before
# the system's; spdlog, built against the system fmt, then fails to compile in every file that
# includes both. A folder holding only a link to spdlog's fmt, searched first, settles it.
set(_loopy_torch_fmt "")
foreach(dir IN LISTS TORCH_INCLUDE_DIRS)
    if(EXISTS "${dir}/fmt/core.h")
        set(_loopy_torch_fmt "${dir}/fmt")
    endif()
endforeach()
if(_loopy_torch_fmt AND TARGET fmt::fmt)
    get_target_property(_loopy_fmt_include fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
    list(GET _loopy_fmt_include 0 _loopy_fmt_include)
    if(EXISTS "${_loopy_fmt_include}/fmt/core.h"
       AND NOT "${_loopy_fmt_include}/fmt" STREQUAL "${_loopy_torch_fmt}")
        set(_loopy_shim ${CMAKE_BINARY_DIR}/generated/fmt-shim)
        file(MAKE_DIRECTORY ${_loopy_shim})
        file(CREATE_LINK "${_loopy_fmt_include}/fmt" "${_loopy_shim}/fmt" SYMBOLIC)
        include_directories(BEFORE SYSTEM ${_loopy_shim})
        message(STATUS "LibTorch bundles fmt; spdlog's (${_loopy_fmt_include}/fmt) comes first")
    endif()
endif()
