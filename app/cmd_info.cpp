// `loopy info FILE.safetensors [--tensors]` and `loopy info --system`.
#include <iostream>
#include <map>
#include <sstream>

#include "app/commands.h"
#include "audio/devices.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/system.h"

namespace loopy::cli {
namespace {

struct InfoArgs {
    std::string file;
    bool tensors = false;
    bool system = false;
};

std::string human_bytes(uint64_t n) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(n);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    std::ostringstream os;
    os.precision(u == 0 ? 0 : 2);
    os << std::fixed << v << " " << units[u];
    return os.str();
}

std::string shape_string(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
        s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

void print_file(const InfoArgs& args) {
    const safetensors::File file = safetensors::File::open(args.file);
    const auto& h = file.header;
    std::cout << "file:     " << args.file << "\n";
    std::cout << "metadata: " << (h.metadata.empty() ? "(none)" : "") << "\n";
    for (const auto& [k, v] : h.metadata) {
        const std::string shown = v.size() > 2000 ? v.substr(0, 2000) + " ..." : v;
        std::cout << "  " << k << " = " << shown << "\n";
    }
    std::map<std::string, std::pair<std::size_t, uint64_t>> by_dtype;
    uint64_t total = 0;
    for (const auto& t : h.tensors) {
        auto& e = by_dtype[std::string(safetensors::dtype_name(t.dtype))];
        ++e.first;
        e.second += t.nbytes();
        total += t.nbytes();
    }
    std::cout << "tensors:  " << h.tensors.size() << "\n";
    std::cout << "dtypes:  ";
    for (const auto& [name, e] : by_dtype)
        std::cout << " " << name << " x" << e.first << " (" << human_bytes(e.second) << ")";
    std::cout << "\nbytes:    " << total << " (" << human_bytes(total) << ")\n";
    if (!args.tensors) return;
    std::vector<const safetensors::TensorInfo*> sorted;
    for (const auto& t : h.tensors)
        sorted.push_back(&t);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->name < b->name; });
    for (const auto* t : sorted)
        std::cout << "  " << t->name << "  " << safetensors::dtype_name(t->dtype) << "  "
                  << shape_string(t->shape) << "\n";
}

void print_system() {
    std::cout << describe(system_info());
    try {
        const auto devices = audio::list_devices();
        std::cout << "PortAudio      " << audio::portaudio_version() << ", " << devices.size()
                  << " device(s)\n";
        for (const auto& d : devices)
            std::cout << "  [" << d.index << "] " << d.name << " (" << d.host_api << ", in "
                      << d.max_input_channels << ", out " << d.max_output_channels << ")"
                      << (d.is_default_input ? " default-input" : "")
                      << (d.is_default_output ? " default-output" : "") << "\n";
    } catch (const Error& e) {
        std::cout << "PortAudio      unavailable: " << e.what() << "\n";
    }
}

}  // namespace

Runner add_info_command(CLI::App& app) {
    auto args = std::make_shared<InfoArgs>();
    CLI::App* cmd =
        app.add_subcommand("info", "Describe a safetensors/checkpoint file or the system");
    cmd->add_option("file", args->file, "A .safetensors file")->check(CLI::ExistingFile);
    cmd->add_flag("--tensors", args->tensors, "List every tensor's name, dtype and shape");
    cmd->add_flag("--system", args->system,
                  "LibTorch version, CUDA, threads, BLAS and audio devices");
    return [args]() {
        if (!args->system && args->file.empty())
            throw Error("info: give a FILE.safetensors or --system");
        if (args->system) print_system();
        if (!args->file.empty()) print_file(*args);
        return 0;
    };
}

}  // namespace loopy::cli
