// `loopy info FILE.safetensors [--tensors]` and `loopy info --system`.
#include <iostream>
#include <map>
#include <sstream>

#include "app/commands.h"
#ifndef LOOPY_ENGINE_ONLY
#include "audio/devices.h"
#endif
#include "core/error.h"
#include "core/safetensors.h"
#include "core/system.h"
#include "model/loopy_model.h"

namespace loopy::cli {
namespace {

struct InfoArgs {
    std::string file;
    bool tensors = false;
    bool system = false;
    bool config_json = false;
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

std::string join(const nlohmann::json& list) {
    std::string s;
    for (const auto& v : list)
        s += (s.empty() ? "" : ", ") + v.dump();
    return "[" + s + "]";
}

// A Loopy checkpoint's config, summarised (the whole JSON with --config-json).
void print_loopy_config(const safetensors::Header& h, const InfoArgs& args) {
    std::map<std::string, std::size_t> per_module;
    for (const auto& t : h.tensors)
        ++per_module[t.name.substr(0, t.name.find('.'))];
    std::cout << "tensors by module:";
    for (const auto& [name, n] : per_module)
        std::cout << " " << name << " " << n;
    std::cout << "\n";
    model::LoopyConfig c;
    try {
        c = model::loopy_config_from_metadata(h.metadata, args.file);
    } catch (const Error& e) {
        std::cout << "Loopy config: invalid: " << e.what() << "\n";
        return;
    }
    const auto unet = c.unet_config();
    const auto audio = c.audio_encoder_config();
    const auto& s = c.temporal_segment;
    std::cout << "Loopy config '" << c.name << "' (format version " << model::kLoopyFormatVersion
              << "):\n"
              << "  frames:          " << c.resolution << "x" << c.resolution << ", "
              << c.num_frames << " per clip, latent " << c.latent_size() << "x" << c.latent_size()
              << "\n"
              << "  U-Nets:          block_out_channels " << join(c.unet["block_out_channels"])
              << ", " << unet.layers_per_block << " layer(s) per block, time embedding "
              << unet.time_embed_dim() << "\n"
              << "  VAE:             block_out_channels " << join(c.vae["block_out_channels"])
              << ", scaling_factor " << c.vae_config().scaling_factor << "\n"
              << "  audio encoder:   wav2vec2, " << audio.num_hidden_layers << " layers x "
              << audio.hidden_size << "\n"
              << "  audio tokens:    " << c.audio_projection.context_tokens << " x "
              << c.audio_projection.token_dim << " per frame from " << c.audio_window_frames()
              << " wav2vec frames\n"
              << "  reference:       attention bank"
              << (c.reference_latent_input ? " + latent at the denoiser's conv_in" : "") << "\n"
              << "  temporal layers: " << c.temporal.num_attention_heads << " heads, "
              << c.temporal.num_layers << " block(s)"
              << (c.temporal.double_self_attention ? ", two self-attentions each" : "") << "\n"
              << "  motion frames:   stride " << s.stride << ", expand ratio " << s.expand_ratio
              << ", " << s.num_segments << " segments: " << c.history_frames() << " -> "
              << c.motion_frames() << " (" << model::to_string(s.sampling) << ")\n"
              << "  audio-to-latents: " << c.audio_to_latents.num_embeddings << " embeddings, "
              << c.audio_to_latents.attention_dim << " wide\n";
    if (args.config_json) std::cout << c.to_json().dump(2) << "\n";
}

void print_file(const InfoArgs& args) {
    const safetensors::File file = safetensors::File::open(args.file);
    const auto& h = file.header;
    std::cout << "file:     " << args.file << "\n";
    std::cout << "metadata: " << (h.metadata.empty() ? "(none)" : "") << "\n";
    for (const auto& [k, v] : h.metadata) {
        if (k == model::kConfigKey) {  // printed readably below
            std::cout << "  " << k << " = (" << v.size() << " bytes of JSON, see below)\n";
            continue;
        }
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
    if (h.metadata.count(model::kConfigKey)) print_loopy_config(h, args);
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
#ifdef LOOPY_ENGINE_ONLY
    std::cout << "PortAudio      not built in (engine-only build)\n";
#else
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
#endif
}

}  // namespace

Runner add_info_command(CLI::App& app) {
    auto args = std::make_shared<InfoArgs>();
    CLI::App* cmd =
        app.add_subcommand("info", "Describe a safetensors/checkpoint file or the system");
    cmd->add_option("file", args->file, "A .safetensors file")->check(CLI::ExistingFile);
    cmd->add_flag("--tensors", args->tensors, "List every tensor's name, dtype and shape");
    cmd->add_flag("--config-json", args->config_json, "A Loopy checkpoint's whole config as JSON");
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
