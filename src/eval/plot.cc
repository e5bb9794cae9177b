#include "eval/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "eval/bitmap_font.h"
#include "io/png.h"

namespace memoe {

namespace {

constexpr Rgb kWhite{255, 255, 255};
constexpr Rgb kText{30, 30, 30};
constexpr Rgb kFrame{90, 90, 90};
constexpr Rgb kGrid{228, 228, 228};
constexpr Rgb kLegendBorder{190, 190, 190};

// Series with at most this many finite points get a dot on every point.
constexpr size_t kMaxPointsWithDots = 40;

// 1, 2, 5 or 10 times a power of ten near x (> 0): rounded, or at least x.
double nice_number(double x, bool round) {
  const double exponent = std::floor(std::log10(x));
  const double base = std::pow(10.0, exponent), f = x / base;
  double nice;
  if (round) nice = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  else nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  return nice * base;
}

struct Range {
  double lo = 0.0, hi = 1.0;
};

// Finite extent of values; a degenerate one is widened so the axis has a span.
Range data_range(const std::vector<Series>& series, bool use_x) {
  double lo = INFINITY, hi = -INFINITY;
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      const double v = use_x ? s.x[i] : s.y[i];
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  if (lo > hi) return {0.0, 1.0};  // no finite point at all
  const double magnitude = std::max(std::fabs(lo), std::fabs(hi));
  if (hi - lo <= 1e-9 * magnitude) {  // constant (up to rounding): centre it
    const double pad = magnitude > 0.0 ? 0.1 * magnitude : 1.0;
    lo -= pad;
    hi += pad;
  }
  MEMOE_CHECK(std::isfinite(hi - lo), "plot: ", use_x ? "x" : "y", " values span too wide a range to draw");
  return {lo, hi};
}

struct Axis {
  std::vector<double> ticks;
  std::vector<std::string> labels;
  Range range;  // ticks.front() .. ticks.back()
};

Axis make_axis(Range data) {
  Axis a;
  a.ticks = nice_ticks(data.lo, data.hi);
  const double step = a.ticks[1] - a.ticks[0];
  for (double t : a.ticks) a.labels.push_back(format_tick(t, step));
  a.range = {a.ticks.front(), a.ticks.back()};
  return a;
}

// Counts how much of the data (points and samples along segments) a
// candidate legend box would hide.
size_t data_under(const std::vector<std::vector<Point>>& lines, Rect box) {
  size_t n = 0;
  auto inside = [&](double x, double y) { return x >= box.x0 && x < box.x1 && y >= box.y0 && y < box.y1; };
  for (const auto& pts : lines)
    for (size_t i = 0; i < pts.size(); ++i) {
      n += inside(pts[i].x, pts[i].y);
      if (i == 0) continue;
      const double len = std::hypot(pts[i].x - pts[i - 1].x, pts[i].y - pts[i - 1].y);
      const int steps = int(std::min(len / 4.0, 1000.0));
      for (int k = 1; k < steps; ++k) {
        const double t = double(k) / steps;
        n += inside(pts[i - 1].x + t * (pts[i].x - pts[i - 1].x), pts[i - 1].y + t * (pts[i].y - pts[i - 1].y));
      }
    }
  return n;
}

}  // namespace

Rgb series_color(size_t index) {
  static constexpr Rgb kPalette[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},
                                     {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                                     {188, 189, 34},  {23, 190, 207}};
  return kPalette[index % (sizeof(kPalette) / sizeof(kPalette[0]))];
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  MEMOE_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo < hi && std::isfinite(hi - lo), "plot: bad axis range [",
              lo, ", ", hi, "]");
  target = std::max(target, 2);
  const double step = nice_number(nice_number(hi - lo, false) / (target - 1), true);
  const double first = std::floor(lo / step), last = std::ceil(hi / step);
  MEMOE_CHECK(last - first <= 1000, "plot: axis range [", lo, ", ", hi, "] is too narrow for its magnitude");
  std::vector<double> ticks;
  for (double k = first; k <= last; k += 1.0) {
    const double t = k * step;
    ticks.push_back(std::fabs(t) < 1e-9 * step ? 0.0 : t);  // no "-0"
  }
  if (ticks.size() < 2) ticks.push_back(ticks.back() + step);
  return ticks;
}

std::string format_tick(double value, double step) {
  char buf[64];
  if (value == 0.0) return "0";
  if (step >= 1e5 || step < 1e-4) {
    const int digits = std::clamp(int(std::floor(std::log10(std::fabs(value))) - std::floor(std::log10(step))) + 1, 1, 15);
    std::snprintf(buf, sizeof buf, "%.*e", digits - 1, value);
    // "1.5e-05" -> "1.5e-5", "2e+06" -> "2e6"
    std::string s = buf;
    const size_t e = s.find('e');
    std::string mantissa = s.substr(0, e), exponent = s.substr(e + 1);
    const bool negative = exponent[0] == '-';
    exponent = exponent.substr(1);
    while (exponent.size() > 1 && exponent[0] == '0') exponent.erase(0, 1);
    return mantissa + "e" + (negative ? "-" : "") + exponent;
  }
  const int decimals = std::max(0, -int(std::floor(std::log10(step) + 1e-9)));
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

void plot_lines_png(const std::string& path, const std::string& title, const std::string& x_label,
                    const std::string& y_label, const std::vector<Series>& series, int width, int height) {
  MEMOE_CHECK(width >= 200 && height >= 200 && width <= 8000 && height <= 8000, "cannot plot ", path,
              ": image size ", width, "x", height, " out of range [200, 8000]");
  for (size_t i = 0; i < series.size(); ++i)
    MEMOE_CHECK(series[i].x.size() == series[i].y.size(), "cannot plot ", path, ": series ", i, " ('",
                series[i].label, "') has ", series[i].x.size(), " x values but ", series[i].y.size(), " y values");

  // Text scale grows with the image so labels stay legible on big charts.
  const int s = std::max(1, std::min(width, height) / 400);
  const int row = font::kGlyphRows * s;  // height of one line of text
  const int tick_len = 4 * s;
  const Axis xa = make_axis(data_range(series, true)), ya = make_axis(data_range(series, false));

  int y_tick_width = 0;
  for (const auto& l : ya.labels) y_tick_width = std::max(y_tick_width, font::text_width(l, s));
  const int left = 10 * s + (y_label.empty() ? 0 : row + 8 * s) + y_tick_width + 5 * s + tick_len;
  const int right = 20 * s;
  const int top = 12 * s + (title.empty() ? 0 : 2 * row + 10 * s);
  const int bottom = tick_len + 6 * s + row + (x_label.empty() ? 0 : 6 * s + row) + 10 * s;
  const Rect plot{left, top, width - right, height - bottom};
  MEMOE_CHECK(plot.x1 - plot.x0 >= 50 && plot.y1 - plot.y0 >= 50, "cannot plot ", path, ": ", width, "x", height,
              " leaves no room for the plot area");

  // Data -> pixel coordinates: the axis ends sit on the frame's pixel centres.
  auto px = [&](double x) {
    return plot.x0 + 0.5 + (x - xa.range.lo) / (xa.range.hi - xa.range.lo) * (plot.x1 - plot.x0 - 1);
  };
  auto py = [&](double y) {
    return plot.y1 - 0.5 - (y - ya.range.lo) / (ya.range.hi - ya.range.lo) * (plot.y1 - plot.y0 - 1);
  };

  Canvas c(width, height, kWhite);
  for (double t : xa.ticks) {
    const int x = int(std::floor(px(t)));
    c.fill_rect({x, plot.y0, x + s, plot.y1}, kGrid);
  }
  for (double t : ya.ticks) {
    const int y = int(std::floor(py(t)));
    c.fill_rect({plot.x0, y, plot.x1, y + s}, kGrid);
  }

  // Runs of consecutive finite points, per series, in pixel coordinates.
  std::vector<std::vector<std::vector<Point>>> runs(series.size());
  std::vector<std::vector<Point>> all_runs;
  for (size_t i = 0; i < series.size(); ++i) {
    std::vector<Point> run;
    for (size_t k = 0; k <= series[i].x.size(); ++k) {
      const bool ok = k < series[i].x.size() && std::isfinite(series[i].x[k]) && std::isfinite(series[i].y[k]);
      if (ok) run.push_back({px(series[i].x[k]), py(series[i].y[k])});
      else if (!run.empty()) runs[i].push_back(std::move(run)), run.clear();
    }
    for (const auto& r : runs[i]) all_runs.push_back(r);
  }
  for (size_t i = 0; i < series.size(); ++i) {
    size_t points = 0;
    for (const auto& r : runs[i]) points += r.size();
    for (const auto& r : runs[i]) {
      c.polyline(r, 2.0 * s, series_color(i), plot);
      if (points <= kMaxPointsWithDots || r.size() == 1)
        for (const Point& p : r) c.dot(p.x, p.y, 2.5 * s, series_color(i), plot);
    }
  }

  c.stroke_rect(plot, kFrame);
  for (size_t i = 0; i < xa.ticks.size(); ++i) {
    const int x = int(std::floor(px(xa.ticks[i])));
    c.fill_rect({x, plot.y1, x + s, plot.y1 + tick_len}, kFrame);
    const int w = font::text_width(xa.labels[i], s);
    const int lx = std::clamp(x - w / 2, 0, width - w);
    c.text(lx, plot.y1 + tick_len + 6 * s, xa.labels[i], s, kText);
  }
  for (size_t i = 0; i < ya.ticks.size(); ++i) {
    const int y = int(std::floor(py(ya.ticks[i])));
    c.fill_rect({plot.x0 - tick_len, y, plot.x0, y + s}, kFrame);
    const int w = font::text_width(ya.labels[i], s);
    c.text(plot.x0 - tick_len - 5 * s - w, y - font::kCapHeight * s / 2, ya.labels[i], s, kText);
  }
  if (!x_label.empty()) {
    const int w = font::text_width(x_label, s);
    c.text((plot.x0 + plot.x1 - w) / 2, plot.y1 + tick_len + 6 * s + row + 6 * s, x_label, s, kText);
  }
  if (!y_label.empty()) {
    const int w = font::text_width(y_label, s);
    c.text(10 * s, (plot.y0 + plot.y1 - w) / 2, y_label, s, kText, /*vertical=*/true);
  }
  if (!title.empty()) {
    const int w = font::text_width(title, 2 * s);
    c.text(std::max(0, (plot.x0 + plot.x1 - w) / 2), 12 * s, title, 2 * s, kText);
  }

  // Legend: in whichever corner of the plot hides the least data (top right on ties).
  std::vector<size_t> entries;
  int label_width = 0;
  for (size_t i = 0; i < series.size(); ++i)
    if (!series[i].label.empty()) {
      entries.push_back(i);
      label_width = std::max(label_width, font::text_width(series[i].label, s));
    }
  if (!entries.empty()) {
    const int line_h = row + 5 * s, swatch = 20 * s, margin = 8 * s;
    const int bw = 8 * s + swatch + 6 * s + label_width + 8 * s, bh = 6 * s + int(entries.size()) * line_h;
    const Rect corners[] = {{plot.x1 - margin - bw, plot.y0 + margin, plot.x1 - margin, plot.y0 + margin + bh},
                            {plot.x0 + margin, plot.y0 + margin, plot.x0 + margin + bw, plot.y0 + margin + bh},
                            {plot.x1 - margin - bw, plot.y1 - margin - bh, plot.x1 - margin, plot.y1 - margin},
                            {plot.x0 + margin, plot.y1 - margin - bh, plot.x0 + margin + bw, plot.y1 - margin}};
    Rect box = corners[0];
    size_t best = data_under(all_runs, box);
    for (const Rect& r : corners) {
      const size_t n = data_under(all_runs, r);
      if (n < best) best = n, box = r;
    }
    c.fill_rect(box, kWhite);
    c.stroke_rect(box, kLegendBorder);
    for (size_t e = 0; e < entries.size(); ++e) {
      const int y = box.y0 + 6 * s + int(e) * line_h;
      const double mid = y + font::kCapHeight * s / 2.0;
      const Rgb color = series_color(entries[e]);
      c.polyline({{box.x0 + 8.0 * s, mid}, {box.x0 + 8.0 * s + swatch, mid}}, 2.0 * s, color, box);
      c.text(box.x0 + 8 * s + swatch + 6 * s, y, series[entries[e]].label, s, kText);
    }
  }

  write_png_rgb(path, width, height, c.pixels());
}

}  // namespace memoe
