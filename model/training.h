#pragma once
// Training Loopy (docs/training.md): the diffusion loss with the method's condition masks, the
// two training stages and which parameters each trains, AdamW, gradient clipping, EMA, and
// checkpoints that resume bit for bit. No data loading here (render/train_data.h fills a
// TrainingBatch).
//
// Randomness: every draw for an item of a step (masks, timestep, noise, TSM sampling) comes from a
// generator seeded by (seed, step, the item's index in the step's global batch) alone, so the
// random state after N steps is N itself (a resumed run draws exactly what an uninterrupted one
// would), and a rank of a distributed run draws for its slice of the global batch exactly what
// one process with the whole batch would.
#include <torch/torch.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/checkpoint.h"
#include "model/audio_features.h"
#include "model/ddim.h"
#include "model/distributed.h"
#include "model/loopy_model.h"

namespace loopy::model {

// One batch of training clips, all in VAE latent space (latents * scaling_factor).
struct TrainingBatch {
    torch::Tensor latents;        // target frames [B, F, C, h, w]
    torch::Tensor history;        // the H frames before them [B, H, C, h, w], oldest first
    torch::Tensor history_valid;  // bool [B, H]: false where the video had no frame (zeros)
    torch::Tensor reference;      // a frame of the same clip [B, C, h, w]
    // Per item: the samples of the clip's wav2vec window, exactly plan_audio_window(first frame,
    // F) of the clip's audio with zeros outside it (what inference feeds the audio encoder).
    std::vector<std::vector<float>> audio;
    torch::Tensor head_variance;        // [B, 1]: the raw keypoint variance of the F frames
    torch::Tensor expression_variance;  // [B, 1]
    // Optional [B, F, 1, h, w] weights of the squared error (broadcast over channels); the loss
    // is then sum(w * e^2) / sum(w * 1) instead of the mean. Undefined: the plain mean.
    torch::Tensor loss_weight;

    int64_t size() const { return latents.defined() ? latents.size(0) : 0; }
};

// Stage 1: images (one frame, reference net + spatial layers). Stage 2: clips (temporal and
// audio layers, audio projection, audio-to-latents and the audio encoder).
enum class TrainStage : int { Image = 1, Video = 2 };
TrainStage parse_train_stage(int stage);  // throws loopy::Error unless 1 or 2

// Whether `name` (a LoopyModel parameter name) is trained in `stage`. See docs/training.md.
bool trained_in_stage(const std::string& name, TrainStage stage);
// The trained parameters of `stage`, by name, in the model's parameter order.
std::vector<std::pair<std::string, torch::Tensor>> stage_parameters(torch::nn::Module& model,
                                                                    TrainStage stage);

// --- condition masks ---

struct MaskProbabilities {
    double audio = 0.10;      // drop audio attention and the motion latent
    double reference = 0.15;  // drop the reference (and with it the motion frames)
    double motion = 0.40;     // drop the motion frames (independently of the others)
};

struct ConditionMasks {
    torch::Tensor drop_audio;      // bool [B]
    torch::Tensor drop_reference;  // bool [B]
    torch::Tensor drop_motion;     // bool [B], as drawn (the model also drops it with reference)
    torch::Tensor condition;       // int64 [B]: MotionCondition, each with probability 1/3
};

ConditionMasks sample_condition_masks(int64_t batch, at::Generator& generator,
                                      const MaskProbabilities& p = {});

// The head / expression variance as audio-to-latents reads it: log-scaled so that the synthetic
// data's range (about 1e-7 .. 1e-3) maps to about -1 .. 1.
torch::Tensor normalize_variance(const torch::Tensor& variance);

// --- the loss ---

struct LossOptions {
    TrainStage stage = TrainStage::Video;
    bool v_prediction = false;  // target sqrt(a) eps - sqrt(1 - a) x0 instead of eps
    MaskProbabilities masks;
    AudioFeatureOptions audio;  // window from the config, context as inference uses it
};

// Mean squared error of the model's prediction for one batch (forward only). Stage 1 uses only
// the first target frame and no motion / audio inputs. Item i's masks, timestep, noise and TSM
// sampling are drawn on the CPU from item_generators[i] (one per item), in that order; the batch
// (CPU tensors) then moves to the model's device.
torch::Tensor diffusion_loss(LoopyModelImpl& model, const DDIMScheduler& scheduler,
                             const TrainingBatch& batch, const LossOptions& options,
                             std::vector<at::Generator>& item_generators);

// --- the optimiser ---

// AdamW as torch.optim.AdamW (decoupled weight decay, bias correction, no amsgrad), with its
// state by parameter name so it saves to safetensors; parameters without a gradient are skipped.
class AdamW {
  public:
    struct Options {
        double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2;
    };
    AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, Options options);

    void zero_grad();
    void step(double lr);
    // "adamw.exp_avg.<name>", "adamw.exp_avg_sq.<name>", "adamw.step.<name>" (int64 [1]).
    TensorMap state() const;
    void load_state(const TensorMap& state);  // strict: every parameter's state must be there
    const std::vector<std::pair<std::string, torch::Tensor>>& params() const { return params_; }

  private:
    struct Slot {
        torch::Tensor exp_avg, exp_avg_sq;
        int64_t step = 0;
    };
    std::vector<std::pair<std::string, torch::Tensor>> params_;
    std::vector<Slot> slots_;
    Options options_;
};

// Scales the gradients so that their global L2 norm is at most max_norm (<= 0: never); returns
// the norm before scaling.
double clip_gradients(const std::vector<std::pair<std::string, torch::Tensor>>& params,
                      double max_norm);

// Turns oneDNN off while it lives: its convolution backward (the wav2vec CNN) is not bit-for-bit
// reproducible on the CPU, which would break resuming. ATen's own kernels are.
class DeterministicGuard {
  public:
    explicit DeterministicGuard(bool enabled = true);
    ~DeterministicGuard();
    DeterministicGuard(const DeterministicGuard&) = delete;
    DeterministicGuard& operator=(const DeterministicGuard&) = delete;

  private:
    bool mkldnn_;
};

// --- the trainer ---

struct TrainerOptions {
    TrainStage stage = TrainStage::Video;
    double lr = 1e-5;
    int64_t warmup_steps = 0;  // linear warm-up of the learning rate from 0
    AdamW::Options adamw;
    double max_grad_norm = 1.0;  // <= 0: no clipping
    double ema_decay = 0.0;      // 0: no EMA
    bool v_prediction = false;
    // Stage 2: keep the audio encoder as it is (one pretrained with `loopy train-audio`).
    bool freeze_audio_encoder = false;
    // Stage 2: also fine-tune the denoising U-Net's image layers (those of stage 1). They draw the
    // mouth, and in stage 2 alone they can learn to follow the audio; the reference net stays.
    bool train_image_layers = false;
    MaskProbabilities masks;
    double audio_context_seconds = kDefaultAudioContextSeconds;  // as generation's
    uint64_t seed = 0;
    // Draw the same masks, timesteps and noise at every step (an overfitting check).
    bool repeat_randomness = false;
    // Keep oneDNN off during steps so that --resume is bit-exact; off: several times faster
    // convolution backward on CPU, results reproducible only to rounding.
    bool reproducible = true;
    // Where the model trains. Every random draw stays on the CPU (so a run draws the same masks,
    // timesteps and noise on any device); batches move to the device for the loss.
    torch::Device device = torch::kCPU;
    // CUDA only: the forward pass under autocast to bfloat16 (weights, gradients and the
    // optimiser stay float32).
    bool autocast_bf16 = false;
    // Data-parallel training (null: one process). Each rank's step() takes its own slice of
    // equal size B of the global batch (items rank * B .. rank * B + B - 1); gradients and the
    // loss are averaged over the ranks, and only rank 0 writes files.
    std::shared_ptr<ProcessGroup> distributed;
};

struct StepStats {
    int64_t step = 0;  // steps done after this one
    double loss = 0, lr = 0, grad_norm = 0;
    bool skipped = false;  // non-finite loss or gradient: no update was made
};

// The end of every trainer's step, after loss.backward(): clips the gradients, updates the
// parameters unless the loss or the gradient norm is non-finite (one overflow would turn every
// weight into NaN for good; the skip is logged), frees the gradients. `step` is the step count
// after this one. Distributed trainers pass the all-reduced loss, so every rank skips together.
StepStats apply_update(AdamW& optimizer, double loss, double lr, double max_grad_norm,
                       int64_t step);

// Files of a training run's folder.
inline constexpr const char* kTrainModelFile = "model.safetensors";
inline constexpr const char* kTrainEmaFile = "model_ema.safetensors";
inline constexpr const char* kTrainStateFile = "train_state.safetensors";
inline constexpr const char* kTrainLossFile = "loss.csv";

class Trainer {
  public:
    // Freezes every parameter the stage does not train (the VAE always). The model is put in
    // training mode, float32, on options.device (a CUDA device must be available; autocast is
    // for CUDA only). Distributed: every rank then holds rank 0's weights.
    Trainer(LoopyModel model, TrainerOptions options);

    // One optimiser step. Distributed: a collective (every rank calls it with its batch slice),
    // `loss` in the result is the mean over all ranks.
    StepStats step(const TrainingBatch& batch);
    int64_t steps_done() const { return step_; }
    double lr_at(int64_t step) const;
    LoopyModelImpl& model() { return *model_; }
    const TrainerOptions& options() const { return options_; }
    int rank() const { return options_.distributed ? options_.distributed->rank() : 0; }
    int world_size() const { return options_.distributed ? options_.distributed->world_size() : 1; }
    bool writes_files() const { return rank() == 0; }  // only rank 0 saves

    // Atomic writes of DIR/model.safetensors (a Loopy checkpoint `loopy render` reads), with EMA
    // DIR/model_ema.safetensors (the EMA weights, for rendering), then DIR/train_state.safetensors
    // (optimiser, EMA, step, seed, samples seen; written last: it marks a complete save).
    // Does nothing on ranks other than 0.
    void save(const std::string& dir, int64_t samples_seen) const;
    // Loads the model and the state saved by save(); returns the samples seen. Throws if the
    // files disagree (a save interrupted between files) or the options differ in stage or seed.
    // Distributed: a collective; rank 0 reads the files and sends the state to the others.
    int64_t resume(const std::string& dir);
    // What training never changes, from `checkpoint` (the run's --init or --reuse-from) into every
    // model save() writes: its preview decoder, if it holds one (distilled from the VAE, which
    // training leaves as it is, so it stays valid and a model fine-tuned from the demo keeps its
    // fast preview), and the training record of both (loopy.train.vae_steps, .preview_steps).
    // Throws if the preview decoder's tensors are malformed.
    void keep_unchanged_parts(const std::string& checkpoint);

  private:
    std::vector<at::Generator> item_generators(int64_t first_item, int64_t count) const;
    int64_t load_run(const std::string& dir);
    double all_reduce_gradients(double loss, int64_t batch_size);
    void broadcast_state();
    void update_ema();

    LoopyModel model_;
    TrainerOptions options_;
    DDIMScheduler scheduler_;
    AdamW optimizer_;
    std::vector<torch::Tensor> ema_;  // shadows of optimizer_.params() (empty: no EMA)
    int64_t step_ = 0;
    TensorMap kept_tensors_;  // keep_unchanged_parts(): written unchanged into every model
    Metadata kept_metadata_;
};

// Copies the parts of a Loopy network that are trained beforehand and then kept frozen, the VAE
// (with its latent scale) and the audio encoder, from `checkpoint` into `net`: a fresh network of
// another U-Net size then trains only its denoiser, on a data cache encoded with that VAE.
// Throws unless both parts' configs are the checkpoint's.
void reuse_pretrained_parts(LoopyModelImpl& net, const std::string& checkpoint);

// The loss log, DIR/loss.csv: "step,loss,lr,seconds" (seconds: the step's wall time). When
// resuming from step N, rows after N (written after the last checkpoint) are dropped first.
class LossLog {
  public:
    LossLog(const std::string& path, int64_t resume_step);
    void append(const StepStats& stats, double seconds);

  private:
    std::ofstream out_;
};

}  // namespace loopy::model
