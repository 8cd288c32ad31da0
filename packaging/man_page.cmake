# cmake -DLOOPY=<loopy binary> -DHELP2MAN=<help2man> -DOUT=<loopy.1.gz> -DWORK=<dir> -P man_page.cmake
# loopy(1) from `loopy --help` (help2man) plus every subcommand's own --help, gzip-compressed
# the way Debian ships man pages (gzip -9n: no name or time stamp in the file).
foreach(var LOOPY HELP2MAN OUT WORK)
    if(NOT ${var})
        message(FATAL_ERROR "man_page.cmake: ${var} is not set")
    endif()
endforeach()
find_program(GZIP gzip REQUIRED)
file(MAKE_DIRECTORY "${WORK}")

# Help text as it would read when run as plain `loopy`.
function(loopy_help out_var)
    execute_process(COMMAND "${LOOPY}" ${ARGN} --help OUTPUT_VARIABLE text RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "`loopy ${ARGN} --help` failed (${rc})")
    endif()
    string(REPLACE "${LOOPY}" "loopy" text "${text}")
    set(${out_var} "${text}" PARENT_SCOPE)
endfunction()

# The subcommand names listed in a help text ("Subcommands:" block, one "  name  text" a line).
function(loopy_subcommands help out_var)
    string(REPLACE ";" "," help "${help}")
    string(REPLACE "\n" ";" lines "${help}")
    set(names)
    set(inside FALSE)
    foreach(line IN LISTS lines)
        if(line MATCHES "^Subcommands:")
            set(inside TRUE)
        elseif(inside AND line MATCHES "^  ([a-z][a-z0-9-]*)( |$)")
            list(APPEND names "${CMAKE_MATCH_1}")
        elseif(inside AND NOT line MATCHES "^ ")
            set(inside FALSE)
        endif()
    endforeach()
    set(${out_var} ${names} PARENT_SCOPE)
endfunction()

# roff-safe verbatim text: backslashes escaped, lines that start with . or ' defused.
function(roff_verbatim text out_var)
    string(REPLACE "\\" "\\e" text "${text}")
    string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" text "${text}")
    set(${out_var} ".nf\n${text}\n.fi\n" PARENT_SCOPE)
endfunction()

loopy_help(top)
loopy_subcommands("${top}" commands)
if(NOT commands)
    message(FATAL_ERROR "no subcommands found in `loopy --help`")
endif()
set(include "[COMMANDS]\n")
foreach(command IN LISTS commands)
    loopy_help(help ${command})
    roff_verbatim("${help}" body)
    string(APPEND include ".SS \"loopy ${command}\"\n${body}")
    loopy_subcommands("${help}" nested)  # e.g. bench modules / bench render
    foreach(sub IN LISTS nested)
        loopy_help(help ${command} ${sub})
        roff_verbatim("${help}" body)
        string(APPEND include ".SS \"loopy ${command} ${sub}\"\n${body}")
    endforeach()
endforeach()
string(APPEND include [=[
[ENVIRONMENT]
.TP
.B LOOPY_DATA_DIR
A folder searched first for the bundled data (models/loopy\-tiny\-demo.safetensors, samples/).
Then come ../share/loopy\-studio next to the executable (/usr/share/loopy\-studio when installed),
resources/ next to the executable, and the source tree's resources/.

[FILES]
.TP
.I /usr/share/loopy\-studio/models/loopy\-tiny\-demo.safetensors
The demo model that \fBloopy render\fR and \fBloopy eval\fR use without \fB\-\-checkpoint\fR.
.TP
.I /usr/share/loopy\-studio/samples/
A sample portrait and speech recording.

[SEE ALSO]
.BR loopy\-studio (1)
]=])
file(WRITE "${WORK}/loopy.h2m" "${include}")

# help2man runs the program; a wrapper named loopy makes the page say `loopy`, not a build path.
file(WRITE "${WORK}/bin/loopy" "#!/bin/bash\nexec -a loopy \"${LOOPY}\" \"$@\"\n")
file(CHMOD "${WORK}/bin/loopy" PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
     GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
execute_process(
    COMMAND "${HELP2MAN}" --no-info --section=1 "--source=Loopy Studio"
            "--name=talking-portrait video from a portrait and audio"
            "--include=${WORK}/loopy.h2m" "--output=${WORK}/loopy.1" "${WORK}/bin/loopy"
    RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "help2man failed (${rc})")
endif()
file(READ "${WORK}/loopy.1" page)
string(REPLACE "${WORK}/bin/loopy" "loopy" page "${page}")
string(REPLACE "${LOOPY}" "loopy" page "${page}")
file(WRITE "${WORK}/loopy.1" "${page}")
execute_process(COMMAND "${GZIP}" -9 -n -c "${WORK}/loopy.1" OUTPUT_FILE "${OUT}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "gzip failed (${rc})")
endif()
