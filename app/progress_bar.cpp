#include "app/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

namespace loopy::cli {

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)), tty_(isatty(fileno(stderr)) != 0) {}

void ProgressBar::update(double fraction, const std::string& stage, const std::string& detail) {
    const int percent = static_cast<int>(std::clamp(fraction, 0.0, 1.0) * 100.0);
    if (!tty_) {
        const int decile = percent / 10;
        const auto now = std::chrono::steady_clock::now();
        const bool quiet_for_a_while = now - logged_at_ > std::chrono::seconds(10);
        if (decile != logged_decile_ || (stage != stage_ && quiet_for_a_while)) {
            logged_at_ = now;
            std::cerr << label_ << ": " << percent << "% " << stage
                      << (detail.empty() ? "" : "  " + detail) << "\n";
            logged_decile_ = decile;
        }
    } else if (percent != percent_ || stage != stage_ || !detail.empty()) {
        constexpr int kWidth = 30;
        const int filled = percent * kWidth / 100;
        char pct[8];
        std::snprintf(pct, sizeof pct, "%3d%%", percent);
        std::cerr << "\r" << label_ << " [" << std::string(filled, '#')
                  << std::string(kWidth - filled, '.') << "] " << pct << "  " << stage
                  << (detail.empty() ? "" : "  " + detail) << "\033[K" << std::flush;
    }
    stage_ = stage;
    percent_ = percent;
}

void ProgressBar::finish() {
    if (tty_ && percent_ >= 0) std::cerr << "\n";
}

std::string format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    const auto s = static_cast<long>(std::lround(seconds));
    char text[32];
    if (s < 60)
        std::snprintf(text, sizeof text, "%ld s", s);
    else if (s < 3600)
        std::snprintf(text, sizeof text, "%ld:%02ld", s / 60, s % 60);
    else
        std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    return text;
}

}  // namespace loopy::cli
