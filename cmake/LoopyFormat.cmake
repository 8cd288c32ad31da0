# `format` rewrites sources in place; `format-check` fails if any file needs formatting.
find_program(CLANG_FORMAT_EXE NAMES clang-format clang-format-14)
if(CLANG_FORMAT_EXE)
    file(GLOB_RECURSE LOOPY_FORMAT_SOURCES CONFIGURE_DEPENDS
         ${PROJECT_SOURCE_DIR}/app/*.cpp ${PROJECT_SOURCE_DIR}/app/*.h
         ${PROJECT_SOURCE_DIR}/core/*.cpp ${PROJECT_SOURCE_DIR}/core/*.h
         ${PROJECT_SOURCE_DIR}/model/*.cpp ${PROJECT_SOURCE_DIR}/model/*.h
         ${PROJECT_SOURCE_DIR}/audio/*.cpp ${PROJECT_SOURCE_DIR}/audio/*.h
         ${PROJECT_SOURCE_DIR}/render/*.cpp ${PROJECT_SOURCE_DIR}/render/*.h
         ${PROJECT_SOURCE_DIR}/ui/*.cpp ${PROJECT_SOURCE_DIR}/ui/*.h
         ${PROJECT_SOURCE_DIR}/packaging/*.cpp
         ${PROJECT_SOURCE_DIR}/tests/*.cpp ${PROJECT_SOURCE_DIR}/tests/*.h)
    add_custom_target(format COMMAND ${CLANG_FORMAT_EXE} -i ${LOOPY_FORMAT_SOURCES}
                      COMMENT "clang-format (in place)" VERBATIM)
    add_custom_target(format-check
                      COMMAND ${CLANG_FORMAT_EXE} --dry-run -Werror ${LOOPY_FORMAT_SOURCES}
                      COMMENT "clang-format check" VERBATIM)
endif()
