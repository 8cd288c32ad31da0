// `loopy`: the command-line face of the engine. Subcommands live in cmd_*.cpp.
#include <CLI/CLI.hpp>
#include <iostream>
#include <map>

#include "app/commands.h"
#ifndef LOOPY_ENGINE_ONLY
#include "audio/ffmpeg_log.h"
#endif
#include "core/error.h"
#include "core/log.h"
#include "core/system.h"
#include "loopy/version.h"

int main(int argc, char** argv) {
    CLI::App app{"Loopy Studio command line: talking-portrait video from a portrait and audio"};
    app.set_version_flag("--version", std::string("loopy ") + LOOPY_VERSION_STRING);
    app.require_subcommand(1);
    bool verbose = false;
    bool quiet = false;
    int threads = 0;
    app.add_flag("-v,--verbose", verbose, "More log output (debug level)");
    app.add_flag("-q,--quiet", quiet, "Only errors");
    app.add_option("-t,--threads", threads, "Intra-op CPU threads (default: all cores)")
        ->check(CLI::NonNegativeNumber);

    std::map<CLI::App*, loopy::cli::Runner> runners;
    const auto add = [&](loopy::cli::Runner runner) {
        runners[app.get_subcommands({}).back()] = std::move(runner);
    };
    add(loopy::cli::add_info_command(app));
    add(loopy::cli::add_bench_command(app));
    add(loopy::cli::add_convert_command(app));
    add(loopy::cli::add_train_command(app));  // engine-only: from a training data cache
#ifndef LOOPY_ENGINE_ONLY                     // the commands that need the media libraries
    add(loopy::cli::add_render_command(app));
    add(loopy::cli::add_synth_command(app));
    add(loopy::cli::add_eval_command(app));
    add(loopy::cli::add_train_vae_command(app));
    add(loopy::cli::add_train_audio_command(app));
#endif

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    loopy::setup_app_logging({verbose, quiet, true});
#ifndef LOOPY_ENGINE_ONLY
    loopy::audio::route_ffmpeg_logs();
#endif
    loopy::set_num_threads(threads);
    try {
        for (CLI::App* sub : app.get_subcommands())
            if (auto it = runners.find(sub); it != runners.end()) return it->second();
    } catch (const loopy::Error& e) {
        loopy::logger()->error("{}", e.what());
        return 1;
    } catch (const std::exception& e) {
        loopy::logger()->error("unexpected error: {}", e.what());
        return 1;
    }
    return 0;
}
