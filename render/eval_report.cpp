#include "render/eval_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <sstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "render/eval_metrics.h"

namespace loopy::eval {
namespace {

const cv::Scalar kBlack(0, 0, 0), kGrey(200, 200, 200), kWhite(255, 255, 255);
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;

std::string number(double v, const char* format = "%.6g") {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buf[64];
    std::snprintf(buf, sizeof buf, format, v);
    return buf;
}

std::string csv_field(const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string out = "\"";
    for (char c : s)
        out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
}

std::string mean_cell(const std::vector<double>& values) {
    double sum = 0;
    int n = 0;
    for (double v : values) {
        if (std::isnan(v)) continue;
        if (std::isinf(v)) return number(v);
        sum += v;
        ++n;
    }
    return n == 0 ? "n/a" : number(sum / n, "%.4g");
}

void text(cv::Mat& img, const std::string& s, cv::Point at, double scale = 0.45,
          const cv::Scalar& colour = kBlack) {
    cv::putText(img, s, at, kFont, scale, colour, 1, cv::LINE_AA);
}

void write_text_file(const std::string& path, const std::string& s) {
    write_file_atomically(path, s.data(), s.size());
}

struct MethodColumns {
    std::string method;
    int clips = 0;
    std::vector<std::vector<double>> columns;  // one per metric, one value per clip
};

std::vector<MethodColumns> columns_by_method(const ReportTable& table) {
    std::vector<MethodColumns> out;
    for (const auto& r : table.rows) {
        auto it = std::find_if(out.begin(), out.end(),
                               [&](const MethodColumns& m) { return m.method == r.method; });
        if (it == out.end()) {
            out.push_back({r.method, 0, std::vector<std::vector<double>>(table.metrics.size())});
            it = std::prev(out.end());
        }
        ++it->clips;
        for (size_t c = 0; c < it->columns.size(); ++c)
            it->columns[c].push_back(c < r.values.size() ? r.values[c] : std::nan(""));
    }
    return out;
}

void table_header(std::ostringstream& md, const std::vector<std::string>& metrics) {
    md << "| method | clips |";
    for (const auto& m : metrics)
        md << " " << m << " |";
    md << "\n| --- | ---: |";
    for (size_t i = 0; i < metrics.size(); ++i)
        md << " ---: |";
    md << "\n";
}

void table_rows(std::ostringstream& md, const std::vector<MethodColumns>& methods,
                std::string (*cell)(const std::vector<double>&)) {
    for (const auto& m : methods) {
        md << "| " << m.method << " | " << m.clips << " |";
        for (const auto& col : m.columns)
            md << " " << cell(col) << " |";
        md << "\n";
    }
}

std::string standard_error_cell(const std::vector<double>& values) {
    const double se = standard_error(values);
    return std::isnan(se) ? "n/a" : number(se, "%.2g");
}

}  // namespace

std::string markdown_table(const ReportTable& table) {
    const auto methods = columns_by_method(table);
    std::ostringstream md;
    table_header(md, table.metrics);
    table_rows(md, methods, mean_cell);
    const bool spread = std::any_of(methods.begin(), methods.end(),
                                    [](const MethodColumns& m) { return m.clips >= 2; });
    if (spread) {
        md << "\nStandard error of each mean (standard deviation over the clips / "
              "sqrt(clips)):\n\n";
        table_header(md, table.metrics);
        table_rows(md, methods, standard_error_cell);
    }
    return md.str();
}

std::string csv_table(const ReportTable& table) {
    std::ostringstream csv;
    csv << "method,clip";
    for (const auto& m : table.metrics)
        csv << "," << csv_field(m);
    csv << "\n";
    for (const auto& r : table.rows) {
        csv << csv_field(r.method) << "," << csv_field(r.clip);
        for (size_t c = 0; c < table.metrics.size(); ++c)
            csv << "," << number(c < r.values.size() ? r.values[c] : std::nan(""));
        csv << "\n";
    }
    return csv.str();
}

cv::Mat contact_sheet(const std::vector<std::string>& row_labels,
                      const std::vector<std::vector<cv::Mat>>& rows,
                      const std::vector<std::string>& column_labels) {
    if (rows.empty() || rows[0].empty()) throw Error("contact sheet: no frames");
    const cv::Size tile = rows[0][0].size();
    constexpr int kLabelWidth = 140, kHeader = 28, kGap = 4;
    size_t columns = 0;
    for (const auto& r : rows)
        columns = std::max(columns, r.size());
    const int width = kLabelWidth + static_cast<int>(columns) * (tile.width + kGap);
    const int height = kHeader + static_cast<int>(rows.size()) * (tile.height + kGap);
    cv::Mat sheet(height, width, CV_8UC3, kWhite);
    for (size_t c = 0; c < columns && c < column_labels.size(); ++c)
        text(sheet, column_labels[c],
             {kLabelWidth + static_cast<int>(c) * (tile.width + kGap) + 4, kHeader - 9});
    for (size_t r = 0; r < rows.size(); ++r) {
        const int y = kHeader + static_cast<int>(r) * (tile.height + kGap);
        if (r < row_labels.size()) text(sheet, row_labels[r], {6, y + tile.height / 2});
        for (size_t c = 0; c < rows[r].size(); ++c) {
            cv::Mat t = rows[r][c];
            if (t.type() != CV_8UC3) throw Error("contact sheet: frames must be 8-bit RGB");
            if (t.size() != tile) cv::resize(t, t, tile, 0, 0, cv::INTER_AREA);
            t.copyTo(sheet(cv::Rect(kLabelWidth + static_cast<int>(c) * (tile.width + kGap), y,
                                    tile.width, tile.height)));
        }
    }
    return sheet;
}

namespace {

struct PlotFrame {
    cv::Rect area;
    double x_max = 1, y_min = 0, y_max = 1;
    cv::Point at(double x, double y) const {
        return {area.x + cvRound(x / x_max * area.width),
                area.y + area.height - cvRound((y - y_min) / (y_max - y_min) * area.height)};
    }
};

void draw_axes(cv::Mat& img, const PlotFrame& f, const std::string& title,
               const std::string& y_label) {
    for (int i = 0; i <= 4; ++i) {
        const double y = f.y_min + (f.y_max - f.y_min) * i / 4;
        const cv::Point p = f.at(0, y);
        cv::line(img, p, {f.area.x + f.area.width, p.y}, kGrey, 1);
        text(img, number(y, "%.3g"), {4, p.y + 4}, 0.4);
    }
    // Round tick steps (0.1, 0.2, 0.5, 1, 2, 5 ... s), at most 10 of them.
    double step = 0.1;
    for (int i = 0; f.x_max / step > 10; ++i)
        step *= i % 3 == 1 ? 2.5 : 2;
    for (int i = 0; i * step <= f.x_max + 1e-9; ++i) {
        const double x = i * step;
        const cv::Point p = f.at(x, f.y_min);
        cv::line(img, p, p + cv::Point(0, 5), kBlack, 1);
        text(img, number(x, "%.3g"), p + cv::Point(-8, 20), 0.4);
    }
    cv::rectangle(img, f.area, kBlack, 1);
    text(img, title, {f.area.x, 20}, 0.55);
    text(img, "time (s)", {f.area.x + f.area.width / 2 - 30, img.rows - 6}, 0.45);
    text(img, y_label, {f.area.x + 6, f.area.y + 16}, 0.4, cv::Scalar(90, 90, 90));
}

void draw_legend(cv::Mat& img, const PlotFrame& f, const std::vector<Series>& series) {
    int y = f.area.y + 14;
    for (const auto& s : series) {
        const int x = f.area.x + f.area.width - 170;
        cv::line(img, {x, y - 4}, {x + 24, y - 4}, s.colour, 2, cv::LINE_AA);
        text(img, s.label, {x + 30, y}, 0.42);
        y += 18;
    }
}

}  // namespace

cv::Mat line_plot(const std::vector<Series>& series, double fps, cv::Size size,
                  const std::string& title, const std::string& y_label) {
    if (fps <= 0) throw Error("line plot: fps must be positive");
    cv::Mat img(size, CV_8UC3, kWhite);
    PlotFrame f;
    f.area = cv::Rect(60, 32, size.width - 80, size.height - 72);
    size_t longest = 1;
    double lo = 0, hi = 0;
    for (const auto& s : series) {
        longest = std::max(longest, s.values.size());
        for (double v : s.values) {
            if (!std::isfinite(v)) continue;
            lo = std::min(lo, v);
            hi = std::max(hi, v);
        }
    }
    f.x_max = std::max(1.0, static_cast<double>(longest - 1)) / fps;
    f.y_min = lo;
    f.y_max = hi > lo ? hi + 0.05 * (hi - lo) : lo + 1;
    draw_axes(img, f, title, y_label);
    for (const auto& s : series) {
        std::vector<cv::Point> pts;
        for (size_t i = 0; i < s.values.size(); ++i)
            if (std::isfinite(s.values[i])) pts.push_back(f.at(i / fps, s.values[i]));
        if (pts.size() >= 2)
            cv::polylines(img, std::vector<std::vector<cv::Point>>{pts}, false, s.colour, 2,
                          cv::LINE_AA);
    }
    draw_legend(img, f, series);
    return img;
}

void write_png_atomically(const std::string& path, const cv::Mat& rgb) {
    cv::Mat bgr;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    std::vector<uchar> png;
    if (!cv::imencode(".png", bgr, png)) throw Error("could not encode " + path);
    write_file_atomically(path, png.data(), png.size());
}

ReportFiles write_report(const std::string& dir, const ReportInputs& in) {
    std::filesystem::create_directories(dir);
    ReportFiles files;
    files.markdown = dir + "/metrics.md";
    files.csv = dir + "/metrics.csv";
    write_text_file(files.markdown, "# Evaluation\n\n" + markdown_table(in.table));
    write_text_file(files.csv, csv_table(in.table));
    if (!in.sheet_rows.empty()) {
        files.contact_sheet = dir + "/contact_sheet.png";
        write_png_atomically(files.contact_sheet, contact_sheet(in.sheet_row_labels, in.sheet_rows,
                                                                in.sheet_column_labels));
    }
    if (!in.mouth_series.empty()) {
        files.mouth_plot = dir + "/mouth_opening.png";
        write_png_atomically(files.mouth_plot, line_plot(in.mouth_series, in.fps, {900, 320},
                                                         "Mouth opening", "opening (of height)"));
    }
    return files;
}

}  // namespace loopy::eval
