#pragma once
// Builds a Loopy training start from a Stable Diffusion (diffusers) folder and a wav2vec 2.0
// (transformers) folder: both U-Nets from the SD U-Net, VAE and audio encoder copied, every new
// layer freshly initialised (output projections zero, so the new layers start as the identity).
// The backbone sizes come from the folders' config.json; the Loopy part from a preset.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/loopy_model.h"

namespace loopy::model {

struct ConvertOptions {
    std::string sd_dir;        // diffusers pipeline folder: unet/ and vae/
    std::string wav2vec2_dir;  // transformers Wav2Vec2 folder: config.json, model.safetensors
    std::string preset = "sd15";
    uint64_t seed = 0;  // for the fresh layers
};

struct ConvertReport {
    std::string config_name;
    std::vector<std::string> copied;   // checkpoint tensors filled from the folders
    std::vector<std::string> fresh;    // checkpoint tensors initialised here
    std::vector<std::string> zero;     // the fresh ones that start at zero
    std::vector<std::string> ignored;  // source tensors Loopy does not use (e.g. a CTC head)
    int64_t copied_parameters = 0;
    int64_t fresh_parameters = 0;

    // A human-readable summary; fresh tensors grouped by module unless list_all.
    std::string describe(bool list_all = false) const;
};

// stage: what is being done; done/total: tensors so far, of all.
using ConvertProgress = std::function<void(const std::string& stage, int64_t done, int64_t total)>;

// Builds and fills the model in memory. Throws loopy::Error naming the folder/file and tensors
// for missing folders, other architectures, missing or mis-shaped tensors.
LoopyModel convert_to_loopy(const ConvertOptions& options, ConvertReport* report = nullptr,
                            const ConvertProgress& progress = {});

// convert_to_loopy, then save_loopy_checkpoint to out_path.
ConvertReport convert_checkpoint(const ConvertOptions& options, const std::string& out_path,
                                 const ConvertProgress& progress = {});

// True for checkpoint names that only Loopy has (new layers, null contexts, audio modules).
bool is_loopy_only_tensor(const std::string& name);

}  // namespace loopy::model
