#include "model/convert.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/log.h"

namespace loopy::model {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_json(const fs::path& path, const std::string& what) {
    std::ifstream in(path);
    if (!in) throw Error(path.string() + ": cannot open (" + what + ")");
    try {
        return json::parse(in);
    } catch (const json::exception& e) {
        throw Error(path.string() + ": invalid JSON: " + e.what());
    }
}

fs::path diffusers_weights(const fs::path& dir) {
    for (const char* name :
         {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"})
        if (fs::is_regular_file(dir / name)) return dir / name;
    throw Error(dir.string() + ": no diffusion_pytorch_model[.fp16].safetensors");
}

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.rfind(prefix, 0) == 0;
}

// One source file's tensors, copied by name into the model's tensors under `prefix`.
struct Source {
    std::string file;
    TensorMap tensors;
    std::string strip;                  // prefix removed from source keys ("wav2vec2.")
    std::vector<std::string> ignore;    // source key prefixes (after strip) not used
    std::vector<std::string> prefixes;  // where each tensor goes ("reference_unet.", ...)
};

class Copier {
  public:
    Copier(torch::nn::Module& model, int64_t total, const ConvertProgress& progress)
        : total_(total), progress_(progress) {
        for (const auto& item : model.named_parameters(true))
            targets_[item.key()] = item.value();
        for (const auto& item : model.named_buffers(true))
            targets_[item.key()] = item.value();
    }

    void copy(const Source& source, ConvertReport& report) {
        std::vector<std::string> unexpected, mismatched;
        torch::NoGradGuard no_grad;
        for (const auto& prefix : source.prefixes) {
            for (const auto& [key, tensor] : source.tensors) {
                const std::string local = canonical_key(
                    starts_with(key, source.strip) ? key.substr(source.strip.size()) : key);
                if (ignored(local, source.ignore)) {
                    if (prefix == source.prefixes.front()) report.ignored.push_back(key);
                    continue;
                }
                auto it = targets_.find(prefix + local);
                if (it == targets_.end()) {
                    unexpected.push_back(key);
                } else if (it->second.sizes() != tensor.sizes()) {
                    mismatched.push_back(key + ": file " + c10::str(tensor.sizes()) + " vs model " +
                                         c10::str(it->second.sizes()));
                } else {
                    it->second.copy_(tensor);
                    copied_.insert(it->first);
                }
                if (progress_) progress_(prefix + "*", ++done_, total_);
            }
        }
        if (!unexpected.empty() || !mismatched.empty())
            throw Error(source.file + ": does not match the Loopy network: " +
                        list("unexpected", unexpected) + list("wrong shape", mismatched));
    }

    // Everything not copied must be a Loopy-only tensor; those are the fresh ones.
    void finish(const std::vector<Source>& sources, ConvertReport& report) const {
        std::map<std::string, std::vector<std::string>> missing;  // by source file
        for (const auto& [name, tensor] : targets_) {
            const int64_t n = tensor.numel();
            if (copied_.count(name)) {
                report.copied.push_back(name);
                report.copied_parameters += n;
            } else if (is_loopy_only_tensor(name)) {
                report.fresh.push_back(name);
                report.fresh_parameters += n;
                if (!tensor.any().item<bool>()) report.zero.push_back(name);
            } else {
                missing[source_of(sources, name)].push_back(name);
            }
        }
        if (missing.empty()) return;
        std::string message;
        for (const auto& [file, names] : missing)
            message += (message.empty() ? "" : "\n") + file +
                       ": lacks tensors the Loopy network needs:" + list("missing", names);
        throw Error(message);
    }

  private:
    static std::string source_of(const std::vector<Source>& sources, const std::string& name) {
        for (const auto& s : sources)
            for (const auto& prefix : s.prefixes)
                if (starts_with(name, prefix)) return s.file;
        return "the source folders";
    }
    static bool ignored(const std::string& key, const std::vector<std::string>& prefixes) {
        for (const auto& p : prefixes)
            if (starts_with(key, p)) return true;
        return false;
    }
    static std::string list(const char* title, const std::vector<std::string>& keys) {
        if (keys.empty()) return "";
        std::string s = std::string("\n  ") + title + " (" + std::to_string(keys.size()) + "):";
        for (size_t i = 0; i < keys.size() && i < 30; ++i)
            s += "\n    " + keys[i];
        if (keys.size() > 30) s += "\n    ... and " + std::to_string(keys.size() - 30) + " more";
        return s;
    }

    std::map<std::string, torch::Tensor> targets_;
    std::set<std::string> copied_;
    int64_t done_ = 0, total_ = 0;
    ConvertProgress progress_;
};

Source unet_source(const fs::path& sd) {
    const auto file = diffusers_weights(sd / "unet");
    Source s{file.string(),
             load_safetensors(file.string()),
             "",
             {},
             {"reference_unet.", "denoising_unet."}};
    if (!s.tensors.count("time_embedding.linear_1.weight") || !s.tensors.count("conv_in.weight"))
        throw Error(s.file +
                    ": not a UNet2DConditionModel checkpoint (no time_embedding / conv_in)");
    return s;
}

Source vae_source(const fs::path& sd) {
    const auto file = diffusers_weights(sd / "vae");
    Source s{file.string(), load_safetensors(file.string()), "", {}, {"vae."}};
    if (!s.tensors.count("encoder.conv_in.weight") || !s.tensors.count("decoder.conv_out.weight"))
        throw Error(s.file +
                    ": not an AutoencoderKL checkpoint (no encoder.conv_in / decoder.conv_out)");
    return s;
}

Source audio_source(const fs::path& dir) {
    const auto file = dir / "model.safetensors";
    if (!fs::is_regular_file(file))
        throw Error(file.string() + ": not found" +
                    (fs::exists(dir / "pytorch_model.bin")
                         ? " (only pytorch_model.bin is there: convert it to safetensors)"
                         : ""));
    Source s{file.string(), load_safetensors(file.string()), "", {}, {"audio_encoder."}};
    for (const auto& item : s.tensors)
        if (starts_with(item.first, "wav2vec2.")) s.strip = "wav2vec2.";
    if (!s.tensors.count(s.strip + "feature_extractor.conv_layers.0.conv.weight"))
        throw Error(s.file + ": not a wav2vec2 checkpoint (no feature_extractor.conv_layers.0)");
    // Parts of Wav2Vec2ForCTC / ForPreTraining that feature extraction does not use.
    s.ignore = {"masked_spec_embed", "lm_head.", "quantizer.", "project_hid.", "project_q."};
    return s;
}

LoopyConfig converted_config(const ConvertOptions& o) {
    const fs::path sd(o.sd_dir), audio(o.wav2vec2_dir);
    for (const char* sub : {"unet", "vae"})
        if (!fs::is_directory(sd / sub))
            throw Error(
                o.sd_dir + ": no " + sub +
                "/ folder (expected a diffusers Stable Diffusion folder with unet/ and vae/)");
    LoopyConfig config = LoopyConfig::preset(o.preset);
    config.unet = read_json(sd / "unet" / "config.json", "the U-Net's config");
    config.vae = read_json(sd / "vae" / "config.json", "the VAE's config");
    config.audio_encoder = read_json(audio / "config.json", "the wav2vec2 config");
    // Stable Diffusion's layers were trained without the tiny preset's spatial positions and
    // 4-channel input (no reference latent).
    config.spatial_positions = false;
    config.reference_latent_input = false;
    config.validate();
    return config;
}

std::string folder_name(const std::string& dir) {
    const fs::path p = fs::path(dir).lexically_normal();
    return p.has_filename() ? p.filename().string() : p.parent_path().filename().string();
}

std::string fresh_group(const std::string& name) {
    for (const char* top : {"audio_proj.", "audio_to_latents."})
        if (starts_with(name, top)) return std::string(top) + "*";
    const auto dot = name.find('.');
    const std::string net = name.substr(0, dot);
    for (const char* part : {".inter_clip_temporal.", ".audio_attentions.", ".motion_modules."})
        if (name.find(part) != std::string::npos) return net + ".*" + part + "*";
    return name;
}

}  // namespace

bool is_loopy_only_tensor(const std::string& name) {
    if (starts_with(name, "audio_proj.") || starts_with(name, "audio_to_latents.")) return true;
    if (name == "reference_unet.null_context" || name == "denoising_unet.null_context") return true;
    if (!starts_with(name, "denoising_unet.")) return false;
    for (const char* part : {".inter_clip_temporal.", ".audio_attentions.", ".motion_modules."})
        if (name.find(part) != std::string::npos) return true;
    return false;
}

std::string ConvertReport::describe(bool list_all) const {
    std::ostringstream os;
    os << "Loopy config '" << config_name << "': " << copied.size() << " tensors ("
       << copied_parameters << " parameters) copied, " << fresh.size() << " tensors ("
       << fresh_parameters << " parameters) initialised fresh, " << zero.size()
       << " of them at zero (output projections, null contexts, norm biases)\n";
    os << "copied: the SD U-Net into reference_unet.* and denoising_unet.* (attn2 included: it "
          "attends to the new null_context, not to audio), vae.*, audio_encoder.*\n";
    os << "initialised fresh (the SD text cross-attention weights are not reused for audio):\n";
    if (list_all) {
        for (const auto& name : fresh)
            os << "  " << name
               << (std::find(zero.begin(), zero.end(), name) != zero.end() ? "  (zero)" : "")
               << "\n";
    } else {
        std::map<std::string, std::pair<int64_t, int64_t>> groups;  // tensors, zero tensors
        for (const auto& name : fresh)
            ++groups[fresh_group(name)].first;
        for (const auto& name : zero)
            ++groups[fresh_group(name)].second;
        for (const auto& [group, counts] : groups)
            os << "  " << group << ": " << counts.first << " tensors"
               << (counts.second ? ", " + std::to_string(counts.second) + " zero" : "") << "\n";
    }
    if (!ignored.empty()) {
        os << "source tensors not used (" << ignored.size() << "):";
        for (const auto& name : ignored)
            os << " " << name;
        os << "\n";
    }
    return os.str();
}

LoopyModel convert_to_loopy(const ConvertOptions& options, ConvertReport* report_out,
                            const ConvertProgress& progress) {
    const auto config = converted_config(options);
    std::vector<Source> sources{unet_source(options.sd_dir), vae_source(options.sd_dir),
                                audio_source(options.wav2vec2_dir)};
    int64_t total = 0;
    for (const auto& s : sources)
        total += static_cast<int64_t>(s.tensors.size() * s.prefixes.size());
    if (progress) progress("building the network", 0, total);
    torch::manual_seed(options.seed);
    LoopyModel model(config);
    model->eval();
    ConvertReport report;
    report.config_name = config.name;
    Copier copier(*model, total, progress);
    for (const auto& s : sources)
        copier.copy(s, report);
    copier.finish(sources, report);
    logger()->info("converted {} + {}: {} tensors copied, {} fresh", options.sd_dir,
                   options.wav2vec2_dir, report.copied.size(), report.fresh.size());
    if (report_out) *report_out = std::move(report);
    return model;
}

ConvertReport convert_checkpoint(const ConvertOptions& options, const std::string& out_path,
                                 const ConvertProgress& progress) {
    ConvertReport report;
    auto model = convert_to_loopy(options, &report, progress);
    const int64_t total = static_cast<int64_t>(report.copied.size() + report.fresh.size());
    if (progress) progress("writing " + out_path, total, total);
    const std::string sources =
        folder_name(options.sd_dir) + " + " + folder_name(options.wav2vec2_dir);
    save_loopy_checkpoint(out_path, *model, {{"loopy.converted_from", sources}});
    return report;
}

}  // namespace loopy::model
