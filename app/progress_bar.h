#pragma once
// The CLI's progress display: a one-line bar redrawn in place on a terminal; on a pipe or in CI
// a line per 10 % (and on a new stage after 10 quiet seconds), so logs stay short.
#include <chrono>
#include <string>

namespace loopy::cli {

class ProgressBar {
  public:
    explicit ProgressBar(std::string label);
    // fraction in [0, 1]; `stage` names what is running ("clip 3/10"), `detail` is appended
    // (an ETA) and never starts a new log line by itself.
    void update(double fraction, const std::string& stage, const std::string& detail = "");
    void finish();  // ends the terminal line

  private:
    std::string label_;
    bool tty_;
    std::string stage_;
    int percent_ = -1;
    int logged_decile_ = -1;
    std::chrono::steady_clock::time_point logged_at_{};
};

// "1:05" / "12 s" style durations for ETAs.
std::string format_duration(double seconds);

}  // namespace loopy::cli
