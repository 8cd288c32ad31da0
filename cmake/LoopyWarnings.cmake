# Warnings for the project's own targets (not for third-party headers, which are SYSTEM).
function(loopy_set_warnings target)
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()
