#pragma once
// Where the bundled data (the demo model, sample inputs) lives, for the CLI and the GUI alike.
// No Qt and no LibTorch: this is part of loopy_base.
#include <string>
#include <vector>

namespace loopy {

// The bundled demo model, relative to a data folder.
inline constexpr const char* kDemoCheckpoint = "models/loopy-tiny-demo.safetensors";

// The running executable (/proc/self/exe), or "" if it cannot be read.
std::string executable_path();

// The data folders searched, in order, for an executable at `exe`:
//   1. $LOOPY_DATA_DIR, when set and not empty;
//   2. <exe dir>/../share/loopy-studio (an installed tree: /usr/bin -> /usr/share/loopy-studio);
//   3. <exe dir>/resources (a portable folder);
//   4. the source tree's resources/ (runs from a build folder).
// Entries are lexically normalised; a missing exe skips 2 and 3.
std::vector<std::string> data_dirs(const std::string& exe);
std::vector<std::string> data_dirs();  // for the running executable

// The first data folder holding `relative` as a regular file: that file's path; "" if none.
std::string find_data_file(const std::string& relative);
std::string find_data_file(const std::string& relative, const std::vector<std::string>& dirs);

// find_data_file(kDemoCheckpoint).
std::string default_checkpoint();

// `given` when not empty; otherwise the demo model, logged at info level. Throws loopy::Error
// naming the searched folders when there is none.
std::string checkpoint_or_default(const std::string& given);

// "models/x was not found in: A, B, C (set LOOPY_DATA_DIR ...)": for error messages.
std::string describe_missing_data_file(const std::string& relative);

}  // namespace loopy
