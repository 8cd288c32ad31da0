#pragma once
// Engine logging. The engine writes to the "loopy" spdlog logger; applications decide where it
// goes (console, rotating file, a GUI panel) by replacing its sinks.
#include <spdlog/spdlog.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace loopy {

std::shared_ptr<spdlog::logger> logger();

// Replaces every sink of the engine logger (thread-safe with respect to logging calls made after
// it returns).
void set_log_sinks(std::vector<spdlog::sink_ptr> sinks);
void set_log_level(spdlog::level::level_enum level);

// A sink that forwards formatted lines to a callback (a GUI log panel, a test).
using LogCallback = std::function<void(spdlog::level::level_enum, const std::string&)>;
spdlog::sink_ptr make_callback_sink(LogCallback callback);

struct AppLogOptions {
    bool verbose = false;
    bool quiet = false;
    bool file = true;  // rotating file in the user's data dir
};

// What the executables call once: console sink (stderr) plus a rotating log file under
// $XDG_DATA_HOME/loopy-studio/logs (or ~/.local/share/...). Returns the log file path ("" if none).
std::string setup_app_logging(const AppLogOptions& options);

// $XDG_DATA_HOME/loopy-studio (created on demand).
std::string user_data_dir();

}  // namespace loopy
