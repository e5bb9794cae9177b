// Charts as PNG files, drawn by PLplot's cairo driver (pngcairo): line plots
// (e.g. training and held-out loss against step) and heatmaps (e.g. accuracy
// by context length and needle depth). Rendering needs no display; each file
// is written atomically (the old file or the whole new one, never a part).
#pragma once
#include <string>
#include <vector>

namespace memoe {

struct Series {
  std::string label;  // legend text; an empty label leaves the series out of the legend
  std::vector<double> x, y;
};

struct LinePlot {
  std::string title, x_label, y_label;
  std::vector<Series> series;  // drawn in order, each a line through its points
  bool log_y = false;          // logarithmic y axis (every y must be > 0)
  int width = 800, height = 500;  // pixels, each in [200, 8000]
};

struct Heatmap {
  std::string title, x_label, y_label;
  std::vector<std::string> column_labels;   // x ticks, left to right
  std::vector<std::string> row_labels;      // y ticks, top to bottom
  std::vector<std::vector<double>> values;  // values[row][column], printed in each cell
  double scale_min = 0.0, scale_max = 1.0;  // colour scale (clamped); equal: the data's own range
  int decimals = 2;                         // digits after the point in each cell's text
  std::string scale_label;                  // caption of the colour bar
  int width = 800, height = 600;
};

// Draws the plot into `path` as a PNG of exactly width x height pixels.
// Bad input is a one-line memoe::Error naming the path, and writes nothing:
// no series, an empty series, x and y of different lengths, a non-finite
// value, y <= 0 on a log axis, a size out of range, an unwritable path.
void write_line_plot_png(const std::string& path, const LinePlot& plot);

// Draws a grid of coloured cells (a perceptual dark-to-bright scale, with a
// colour bar at the right) with each value printed in its cell. Errors as
// above, and for labels that do not match the grid's dimensions.
void write_heatmap_png(const std::string& path, const Heatmap& map);

}  // namespace memoe
