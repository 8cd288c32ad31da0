#include "core/resources.h"

#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "core/error.h"
#include "core/log.h"

namespace fs = std::filesystem;

namespace loopy {

std::string executable_path() {
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    return ec ? std::string() : exe.string();
}

std::vector<std::string> data_dirs(const std::string& exe) {
    std::vector<std::string> dirs;
    const auto add = [&](const fs::path& dir) {
        const std::string d = dir.lexically_normal().string();
        for (const auto& existing : dirs)
            if (existing == d) return;
        dirs.push_back(d);
    };
    if (const char* env = std::getenv("LOOPY_DATA_DIR"); env && *env) add(env);
    if (!exe.empty()) {
        const fs::path bin = fs::path(exe).parent_path();
        add(bin / ".." / "share" / "loopy-studio");
        add(bin / "resources");
    }
#ifdef LOOPY_SOURCE_RESOURCE_DIR
    add(LOOPY_SOURCE_RESOURCE_DIR);
#endif
    return dirs;
}

std::vector<std::string> data_dirs() {
    return data_dirs(executable_path());
}

std::string find_data_file(const std::string& relative, const std::vector<std::string>& dirs) {
    for (const auto& dir : dirs) {
        const fs::path file = fs::path(dir) / relative;
        std::error_code ec;
        if (fs::is_regular_file(file, ec)) return file.lexically_normal().string();
    }
    return {};
}

std::string find_data_file(const std::string& relative) {
    return find_data_file(relative, data_dirs());
}

std::string default_checkpoint() {
    return find_data_file(kDemoCheckpoint);
}

std::string checkpoint_or_default(const std::string& given) {
    if (!given.empty()) return given;
    const std::string demo = default_checkpoint();
    if (demo.empty())
        throw Error("no --checkpoint given and the demo model " +
                    describe_missing_data_file(kDemoCheckpoint));
    logger()->info("no --checkpoint given: using the demo model {}", demo);
    return demo;
}

std::string describe_missing_data_file(const std::string& relative) {
    std::string places;
    for (const auto& dir : data_dirs())
        places += (places.empty() ? "" : ", ") + dir;
    return relative + " was not found in: " + (places.empty() ? "(no data folders)" : places) +
           " (LOOPY_DATA_DIR names another data folder)";
}

}  // namespace loopy
