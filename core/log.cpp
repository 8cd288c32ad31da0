#include "core/log.h"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

namespace loopy {
namespace {

class CallbackSink : public spdlog::sinks::base_sink<std::mutex> {
  public:
    explicit CallbackSink(LogCallback callback) : callback_(std::move(callback)) {}

  protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        spdlog::memory_buf_t formatted;
        formatter_->format(msg, formatted);
        std::string line(formatted.data(), formatted.size());
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
            line.pop_back();
        callback_(msg.level, line);
    }
    void flush_() override {}

  private:
    LogCallback callback_;
};

std::shared_ptr<spdlog::logger> make_default_logger() {
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    auto log = std::make_shared<spdlog::logger>("loopy", sink);
    log->set_level(spdlog::level::info);
    log->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
    return log;
}

}  // namespace

std::shared_ptr<spdlog::logger> logger() {
    static std::shared_ptr<spdlog::logger> instance = make_default_logger();
    return instance;
}

void set_log_sinks(std::vector<spdlog::sink_ptr> sinks) {
    // spdlog's sink list is not synchronised; swapping it is done at start-up or in tests.
    logger()->sinks() = std::move(sinks);
}

void set_log_level(spdlog::level::level_enum level) {
    logger()->set_level(level);
}

spdlog::sink_ptr make_callback_sink(LogCallback callback) {
    return std::make_shared<CallbackSink>(std::move(callback));
}

std::string user_data_dir() {
    namespace fs = std::filesystem;
    fs::path base;
    if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg)
        base = xdg;
    else if (const char* home = std::getenv("HOME"); home && *home)
        base = fs::path(home) / ".local" / "share";
    else
        base = fs::temp_directory_path();
    return (base / "loopy-studio").string();
}

std::string setup_app_logging(const AppLogOptions& options) {
    namespace fs = std::filesystem;
    std::vector<spdlog::sink_ptr> sinks;
    auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    console->set_level(options.quiet     ? spdlog::level::err
                       : options.verbose ? spdlog::level::debug
                                         : spdlog::level::info);
    console->set_pattern("[%^%l%$] %v");
    sinks.push_back(console);

    std::string path;
    if (options.file) {
        try {
            const fs::path dir = fs::path(user_data_dir()) / "logs";
            fs::create_directories(dir);
            path = (dir / "loopy.log").string();
            auto file = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(path, 5 << 20, 3);
            file->set_level(spdlog::level::debug);
            file->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%t] [%l] %v");
            sinks.push_back(file);
        } catch (const std::exception& e) {
            path.clear();  // an unwritable data dir must not stop the program
            console->log(spdlog::details::log_msg("loopy", spdlog::level::warn,
                                                  std::string("no log file: ") + e.what()));
        }
    }
    set_log_sinks(std::move(sinks));
    set_log_level(spdlog::level::debug);
    logger()->flush_on(spdlog::level::warn);
    return path;
}

}  // namespace loopy
