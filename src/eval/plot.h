// Line charts as PNG files (e.g. training and held-out loss against step).
#pragma once
#include <string>
#include <vector>

#include "eval/canvas.h"

namespace memoe {

struct Series {
  std::string label;  // legend text; an empty label leaves the series out of the legend
  std::vector<double> x, y;
};

// Draws each series as a line through its points in order, on axes with
// "nice" ticks covering all finite points; writes the chart to `path` as PNG
// (atomically). Non-finite points are skipped and break the line there; an
// isolated point, and every point of a series with few points, is drawn as a
// dot. Errors (x/y of different lengths, size out of [200, 8000], unwritable
// path) are memoe::Error.
void plot_lines_png(const std::string& path, const std::string& title, const std::string& x_label,
                    const std::string& y_label, const std::vector<Series>& series, int width = 800,
                    int height = 500);

// Colour of series i (a fixed palette of distinct colours, repeating).
Rgb series_color(size_t index);

// Up to about `target` evenly spaced round tick values (multiples of 1, 2 or
// 5 times a power of ten) whose span covers [lo, hi]; lo < hi, both finite.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);

// Tick label text: as few decimals as the tick spacing needs, or scientific
// notation for very large or very small values.
std::string format_tick(double value, double step);

}  // namespace memoe
