#pragma once
// Evaluation reports: a Markdown table of per-method means, a CSV of every (method, clip) row, a
// contact sheet (one row of frames per method at a few times) and a line plot of mouth opening
// over time, all written atomically. No Qt: images are drawn with OpenCV.
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace loopy::eval {

struct MetricRow {
    std::string method;          // "model", "static", "ground truth", ...
    std::string clip;            // clip name
    std::vector<double> values;  // one per ReportTable::metrics
};

struct ReportTable {
    std::vector<std::string> metrics;  // column names, e.g. "psnr", "ssim", "mouth_r"
    std::vector<MetricRow> rows;
};

// One row per method in order of first appearance: the number of clips and each metric's mean
// over the clips, ignoring NaN values ("n/a" when all are NaN; "inf" when any is +inf). When a
// method has 2 or more clips, a second table follows with each mean's standard error.
std::string markdown_table(const ReportTable& table);
// "method,clip,<metrics...>" then one line per row; values printed with %.6g ("inf", "nan").
std::string csv_table(const ReportTable& table);

// Frames (RGB, resized to the first frame's size) in rows, with the row labels on the left and
// the column labels on top. Returns an RGB image.
cv::Mat contact_sheet(const std::vector<std::string>& row_labels,
                      const std::vector<std::vector<cv::Mat>>& rows,
                      const std::vector<std::string>& column_labels);

struct Series {
    std::string label;
    std::vector<double> values;  // one per video frame
    cv::Scalar colour;           // RGB
};
// A line plot over time (x: seconds = frame / fps) with axes, tick labels and a legend. RGB.
cv::Mat line_plot(const std::vector<Series>& series, double fps, cv::Size size,
                  const std::string& title, const std::string& y_label);

struct ReportInputs {
    ReportTable table;
    std::vector<std::string> sheet_row_labels;
    std::vector<std::vector<cv::Mat>> sheet_rows;  // RGB frames; no sheet when empty
    std::vector<std::string> sheet_column_labels;
    std::vector<Series> mouth_series;  // no plot when empty
    double fps = 25;
};

struct ReportFiles {
    std::string markdown;       // metrics.md
    std::string csv;            // metrics.csv
    std::string contact_sheet;  // contact_sheet.png ("" if not written)
    std::string mouth_plot;     // mouth_opening.png ("" if not written)
};

// Writes the report files into `dir` (created).
ReportFiles write_report(const std::string& dir, const ReportInputs& inputs);

// Writes an RGB image as PNG atomically; throws loopy::Error on failure.
void write_png_atomically(const std::string& path, const cv::Mat& rgb);

}  // namespace loopy::eval
