#include "eval/plot.h"

#include <plplot.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "core/error.h"
#include "io/atomic_file.h"

namespace memoe {

namespace {

// PLplot keeps its streams in global state: one render at a time.
std::mutex g_plplot_mutex;

// cmap0 entries (PLplot's indexed colours).
enum Colour : PLINT { kBackground = 0, kInk = 1, kGrid = 2, kWhiteInk = 3, kFirstSeries = 4 };
constexpr std::array<std::array<int, 3>, 10> kSeriesColours = {{{31, 119, 180},
                                                                 {255, 127, 14},
                                                                 {44, 160, 44},
                                                                 {214, 39, 40},
                                                                 {148, 103, 189},
                                                                 {140, 86, 75},
                                                                 {227, 119, 194},
                                                                 {127, 127, 127},
                                                                 {188, 189, 34},
                                                                 {23, 190, 207}}};

// Heatmap colours: viridis, sampled at evenly spaced points and blended linearly.
constexpr std::array<std::array<double, 3>, 9> kHeatColours = {{{0.267, 0.005, 0.329},
                                                                {0.278, 0.175, 0.483},
                                                                {0.231, 0.322, 0.546},
                                                                {0.173, 0.449, 0.558},
                                                                {0.128, 0.567, 0.551},
                                                                {0.153, 0.683, 0.498},
                                                                {0.361, 0.785, 0.388},
                                                                {0.667, 0.862, 0.196},
                                                                {0.993, 0.906, 0.144}}};

// Relative luminance (0 black .. 1 white, on sRGB values) of heat colour f in [0, 1].
double heat_luminance(double f) {
  const double pos = f * double(kHeatColours.size() - 1);
  const size_t i = std::min(size_t(pos), kHeatColours.size() - 2);
  const double w = pos - double(i);
  const double weights[] = {0.2126, 0.7152, 0.0722};
  double luminance = 0.0;
  for (int k = 0; k < 3; ++k) luminance += weights[k] * ((1 - w) * kHeatColours[i][k] + w * kHeatColours[i + 1][k]);
  return luminance;
}

// Series with at most this many points get a marker on every point.
constexpr size_t kMaxPointsWithMarkers = 40;

// The cairo driver's resolution: PLplot's millimetres are 72 per inch of pixels.
constexpr double kMmPerPixel = 25.4 / 72.0;
// Size of the font's em relative to PLplot's character height (measured).
constexpr double kEmPerTextHeight = 1.3;

// PLplot reads '#' as the start of an escape sequence; "##" is a literal '#'.
std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    out += c;
    if (c == '#') out += '#';
  }
  return out;
}

void check_size(const std::string& path, int width, int height) {
  MEMOE_CHECK(width >= 200 && height >= 200 && width <= 8000 && height <= 8000, "cannot plot ", path, ": image size ",
              width, "x", height, " out of range [200, 8000]");
}

void check_text(const std::string& path, const std::string& what, const std::string& text) {
  MEMOE_CHECK(text.find_first_of("\n\r") == std::string::npos, "cannot plot ", path, ": ", what,
              " must be a single line");
}

// Width of a line of text in ems of DejaVu Sans (a little generous, so that
// margins computed from it never clip); UTF-8 continuation bytes add nothing.
double text_ems(const std::string& text) {
  double ems = 0.0;
  for (unsigned char c : text) {
    if ((c & 0xC0) == 0x80) continue;
    if (c >= 0x80) ems += 0.7;
    else if (c >= '0' && c <= '9') ems += 0.64;
    else if (c >= 'A' && c <= 'Z') ems += std::strchr("IJ", c) ? 0.35 : c == 'M' || c == 'W' ? 0.9 : 0.72;
    else if (c >= 'a' && c <= 'z') ems += std::strchr("fijlrt", c) ? 0.4 : c == 'm' || c == 'w' ? 0.92 : 0.62;
    else if (c == ' ') ems += 0.32;
    else if (c == '%') ems += 0.95;
    else ems += 0.45;
  }
  return ems;
}

bool has_cairo_png_driver() {
  static const bool found = [] {
    // PLplot fills caller-owned arrays of capacity n.
    std::array<const char*, 256> menu_storage{}, name_storage{};
    const char** menu = menu_storage.data();
    const char** names = name_storage.data();
    int n = int(name_storage.size());
    plgFileDevs(&menu, &names, &n);
    for (int i = 0; i < n; ++i)
      if (std::strcmp(names[i], "pngcairo") == 0) return true;
    return false;
  }();
  return found;
}

// One PLplot stream drawing a PNG page into memory. Holds the PLplot lock
// for its lifetime.
class PngPage {
 public:
  PngPage(const std::string& path, int width, int height) : lock_(g_plplot_mutex), path_(path) {
    MEMOE_CHECK(has_cairo_png_driver(), "cannot plot ", path,
                ": PLplot's cairo driver (pngcairo) is not installed (apt-get install plplot-driver-cairo)");
    PLINT stream = -1;
    plmkstrm(&stream);
    MEMOE_CHECK(stream >= 0, "cannot plot ", path, ": PLplot has no free stream");
    open_ = true;
    file_ = open_memstream(&buffer_, &size_);
    if (file_ == nullptr) {
      close();
      fail("cannot plot ", path, ": out of memory");
    }
    // Non-fatal PLplot errors land here instead of on stderr.
    plsError(&error_code_, error_message_);
    plsdev("pngcairo");  // a file driver: no display needed
    plsfile(file_);      // PLplot writes the PNG into our memory stream
    plspage(0.0, 0.0, width, height, 0, 0);
    plscolbg(255, 255, 255);
    plscmap0n(kFirstSeries + PLINT(kSeriesColours.size()));
    plscol0(kInk, 40, 40, 40);
    plscol0(kGrid, 225, 225, 225);
    plscol0(kWhiteInk, 255, 255, 255);
    for (size_t i = 0; i < kSeriesColours.size(); ++i)
      plscol0(kFirstSeries + PLINT(i), kSeriesColours[i][0], kSeriesColours[i][1], kSeriesColours[i][2]);
    plinit();
    plsfont(PL_FCI_SANS, PL_FCI_UPRIGHT, PL_FCI_MEDIUM);
    pladv(0);
    page_mm_ = {width * kMmPerPixel, height * kMmPerPixel};
    // Text grows with the image so labels stay legible on big charts.
    text_mm_ = std::clamp(std::min(width, height) / 36.0, 10.0, 60.0) * kMmPerPixel;
    plschr(text_mm_, 1.0);
    plcol0(kInk);
  }

  ~PngPage() {
    close();
    std::free(buffer_);
  }
  PngPage(const PngPage&) = delete;
  PngPage& operator=(const PngPage&) = delete;

  // Page size and the height of body text, in millimetres.
  double width_mm() const { return page_mm_[0]; }
  double height_mm() const { return page_mm_[1]; }
  double text_mm() const { return text_mm_; }

  // Text height scaled by `scale` (1: body text).
  void text_size(double scale) const { plschr(0.0, scale); }

  // Width of `text` in body text, in millimetres: an estimate from DejaVu
  // Sans' advance widths (PLplot has no public call that measures text).
  double text_width(const std::string& text) const { return text_mm_ * kEmPerTextHeight * text_ems(text); }

  // Text scale (relative to body text) at which `text` fits in `room_mm`,
  // at most `largest`.
  double fitting_scale(const std::string& text, double room_mm, double largest) const {
    const double width = text_width(text);
    return width > 0.0 ? std::clamp(room_mm / width, 0.3, largest) : largest;
  }

  // Title above a viewport with these margins, shrunk to fit the page.
  void title(const std::string& text, double left, double right) const {
    if (text.empty()) return;
    const double centre = left + 0.5 * (page_mm_[0] - left - right);
    text_size(fitting_scale(text, 2.0 * std::min(centre, page_mm_[0] - centre) - text_mm_, 1.35));
    plmtex("t", 1.2, 0.5, 0.5, escape(text).c_str());
    text_size(1.0);
  }

  // Viewport from margins given in millimetres.
  void viewport(double left, double right, double bottom, double top) const {
    plvpor(left / page_mm_[0], 1.0 - right / page_mm_[0], bottom / page_mm_[1], 1.0 - top / page_mm_[1]);
  }

  // Finishes the page and returns the PNG's bytes.
  std::string finish() {
    close();
    MEMOE_CHECK(error_code_ == 0, "cannot plot ", path_, ": PLplot: ", first_line(error_message_));
    static constexpr char kSignature[] = "\x89PNG\r\n\x1a\n";
    MEMOE_CHECK(size_ > 8 && std::memcmp(buffer_, kSignature, 8) == 0, "cannot plot ", path_,
                ": PLplot produced no PNG image");
    return std::string(buffer_, size_);
  }

 private:
  static std::string first_line(const char* message) {
    std::string s = message;
    s.erase(0, s.find_first_not_of("\n *"));
    return s.substr(0, s.find('\n'));
  }

  void close() {
    if (open_) {
      PLINT level = 0;
      plglevel(&level);
      plend1();  // ends the page: the driver writes the PNG and closes file_
      open_ = false;
      if (level > 0) file_ = nullptr;
    }
    if (file_ != nullptr) std::fclose(file_);
    file_ = nullptr;
  }

  std::lock_guard<std::mutex> lock_;
  std::string path_;
  char* buffer_ = nullptr;
  size_t size_ = 0;
  FILE* file_ = nullptr;
  bool open_ = false;
  PLINT error_code_ = 0;
  char error_message_[1024] = "";
  std::array<double, 2> page_mm_{};
  double text_mm_ = 0.0;
};

// Renders with `draw` into a PNG and writes it to `path` atomically. The
// target's directory is checked first, so an unwritable path fails before
// any drawing; a failure leaves neither the file nor a temporary behind.
template <typename Draw>
void write_png(const std::string& path, int width, int height, Draw draw) {
  AtomicFileWriter out(path);
  std::string png;
  {
    PngPage page(path, width, height);
    draw(page);
    png = page.finish();
  }
  out.write(png);
  out.commit();
}

struct Range {
  double lo, hi;
};

// [lo, hi] padded by `pad` of its span at each end; a degenerate range is widened.
Range padded(double lo, double hi, double pad) {
  if (hi - lo <= 1e-12 * std::max(std::fabs(lo), std::fabs(hi))) {
    const double half = lo != 0.0 ? 0.1 * std::fabs(lo) : 1.0;
    return {lo - half, hi + half};
  }
  const double span = hi - lo;
  return {lo - pad * span, hi + pad * span};
}

// Tick label text: as many decimals as the spacing needs, or compact
// scientific notation ("1.5e-5") for very large or very small numbers.
std::string format_tick(double value, double step) {
  if (std::fabs(value) < 1e-9 * step) value = 0.0;  // no "-0", no "1e-17"
  char buf[64];
  if (value != 0.0 && (step < 1e-3 || std::fabs(value) >= 1e6)) {
    const int digits =
        std::clamp(int(std::floor(std::log10(std::fabs(value))) - std::floor(std::log10(step))) + 1, 1, 15);
    std::snprintf(buf, sizeof buf, "%.*e", digits - 1, value);
    std::string s = buf;
    const size_t e = s.find('e');
    std::string exponent = s.substr(e + 2);
    exponent.erase(0, std::min(exponent.find_first_not_of('0'), exponent.size() - 1));
    return s.substr(0, e) + "e" + (s[e + 1] == '-' ? "-" : "") + exponent;
  }
  std::snprintf(buf, sizeof buf, "%.*f", std::max(0, -int(std::floor(std::log10(step) + 1e-9))), value);
  return buf;
}

// A round tick spacing (1, 2 or 5 times a power of ten) giving about five
// ticks over r, and the widest of its labels, in millimetres.
struct LinearTicks {
  double step;
  double label_width;
};

LinearTicks linear_ticks(const PngPage& page, Range r) {
  const double raw = (r.hi - r.lo) / 5.0;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / magnitude;
  const double step = (f < 1.5 ? 1.0 : f < 3.0 ? 2.0 : f < 7.0 ? 5.0 : 10.0) * magnitude;
  double widest = 0.0;
  for (double k = std::ceil(r.lo / step); k <= std::floor(r.hi / step); k += 1.0)
    widest = std::max(widest, page.text_width(format_tick(k * step, step)));
  return {step, widest};
}

// Tick spacings of the current plot's axes, for PLplot's label callback.
struct AxisSteps {
  double x = 1.0, y = 1.0;
};

void label_tick(PLINT axis, PLFLT value, char* label, PLINT length, PLPointer data) {
  const AxisSteps& steps = *static_cast<const AxisSteps*>(data);
  std::snprintf(label, size_t(length), "%s", format_tick(value, axis == PL_X_AXIS ? steps.x : steps.y).c_str());
}

struct Tick {
  double at;  // log10 of the value
  std::string label;
};

// Ticks of a log axis over [lo, hi] (log10 values): the decades, or 1-2-5 or
// 1..9 times each decade when the range is too short for three decades.
std::vector<Tick> log_ticks(Range r) {
  static const std::vector<std::vector<int>> kMantissas = {{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}};
  std::vector<Tick> ticks;
  for (const std::vector<int>& mantissas : kMantissas) {
    ticks.clear();
    for (double decade = std::floor(r.lo); decade <= std::ceil(r.hi) && ticks.size() <= 40; decade += 1.0)
      for (int m : mantissas) {
        const double at = decade + std::log10(double(m));
        if (at < r.lo - 1e-9 || at > r.hi + 1e-9) continue;
        char buf[32];
        std::snprintf(buf, sizeof buf, "%g", m * std::pow(10.0, decade));
        ticks.push_back({at, buf});
      }
    if (ticks.size() >= 3) break;
  }
  return ticks;
}

// Draws a log y axis on the current window: grid lines, ticks on both sides
// and the labels at the left (PLplot labels only whole decades).
void draw_log_y_axis(const std::vector<Tick>& ticks, Range xr, Range yr, double tick_len) {
  plcol0(kGrid);
  for (const Tick& t : ticks) pljoin(xr.lo, t.at, xr.hi, t.at);
  plcol0(kInk);
  const double len = tick_len * (xr.hi - xr.lo);
  for (const Tick& t : ticks) {
    pljoin(xr.lo, t.at, xr.lo + len, t.at);
    pljoin(xr.hi - len, t.at, xr.hi, t.at);
    plmtex("lv", 0.6, (t.at - yr.lo) / (yr.hi - yr.lo), 1.0, t.label.c_str());
  }
}

// Corner of the plot (as a PL_POSITION_* mask) whose legend-sized region
// holds the fewest points, preferring top right, then top left.
PLINT quietest_corner(const LinePlot& plot, Range xr, Range yr, double box_w, double box_h) {
  const PLINT corners[] = {PL_POSITION_TOP | PL_POSITION_RIGHT, PL_POSITION_TOP | PL_POSITION_LEFT,
                           PL_POSITION_BOTTOM | PL_POSITION_RIGHT, PL_POSITION_BOTTOM | PL_POSITION_LEFT};
  PLINT best = corners[0];
  size_t best_count = SIZE_MAX;
  for (PLINT c : corners) {
    size_t count = 0;
    for (const Series& s : plot.series)
      for (size_t i = 0; i < s.x.size(); ++i) {
        const double u = (s.x[i] - xr.lo) / (xr.hi - xr.lo);
        const double y = plot.log_y ? std::log10(s.y[i]) : s.y[i];
        const double v = (y - yr.lo) / (yr.hi - yr.lo);
        const bool in_x = (c & PL_POSITION_RIGHT) ? u >= 1.0 - box_w : u <= box_w;
        const bool in_y = (c & PL_POSITION_TOP) ? v >= 1.0 - box_h : v <= box_h;
        count += in_x && in_y;
      }
    if (count < best_count) best = c, best_count = count;
  }
  return best;
}

void draw_legend(PngPage& page, const LinePlot& plot, Range xr, Range yr, double plot_w_mm, double plot_h_mm) {
  std::vector<size_t> entries;
  for (size_t i = 0; i < plot.series.size(); ++i)
    if (!plot.series[i].label.empty()) entries.push_back(i);
  if (entries.empty()) return;
  const PLINT n = PLINT(entries.size());
  std::vector<std::string> texts;
  std::vector<const char*> text_ptrs, symbols;
  std::vector<PLINT> opts, colours, styles, text_colours, symbol_numbers;
  std::vector<PLFLT> widths, symbol_scales;
  double widest = 0.0;
  for (size_t i : entries) {
    texts.push_back(escape(plot.series[i].label));
    widest = std::max(widest, page.text_width(plot.series[i].label));
    const bool markers = plot.series[i].x.size() <= kMaxPointsWithMarkers;
    opts.push_back(PL_LEGEND_LINE | (markers ? PL_LEGEND_SYMBOL : 0));
    colours.push_back(kFirstSeries + PLINT(i % kSeriesColours.size()));
    styles.push_back(1);
    widths.push_back(2.0);
    text_colours.push_back(kInk);
    symbols.push_back("●");
    symbol_numbers.push_back(1);
    symbol_scales.push_back(0.6);
  }
  for (const std::string& t : texts) text_ptrs.push_back(t.c_str());
  // Legend size as a fraction of the plot (line sample, gap and text; rows).
  const double line_sample = 0.08;
  const double box_w = line_sample + (widest + 3.0 * page.text_mm()) / plot_w_mm + 0.03;
  const double box_h = (n * 2.0 + 1.0) * page.text_mm() / plot_h_mm + 0.03;
  const PLINT corner = quietest_corner(plot, xr, yr, box_w, box_h);
  PLFLT legend_w = 0.0, legend_h = 0.0;
  pllegend(&legend_w, &legend_h, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, corner | PL_POSITION_INSIDE, 0.02,
           0.03, line_sample, kBackground, kGrid, 1, 0, 0, n, opts.data(), 1.0, 1.0, 2.0, 0.0, text_colours.data(),
           text_ptrs.data(), nullptr, nullptr, nullptr, nullptr, colours.data(), styles.data(), widths.data(),
           colours.data(), symbol_scales.data(), symbol_numbers.data(), symbols.data());
}

}  // namespace

void write_line_plot_png(const std::string& path, const LinePlot& plot) {
  check_size(path, plot.width, plot.height);
  check_text(path, "the title", plot.title);
  check_text(path, "the x label", plot.x_label);
  check_text(path, "the y label", plot.y_label);
  MEMOE_CHECK(!plot.series.empty(), "cannot plot ", path, ": no series to draw");
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (size_t i = 0; i < plot.series.size(); ++i) {
    const Series& s = plot.series[i];
    const std::string name = "series " + std::to_string(i) + " ('" + s.label + "')";
    check_text(path, name + "'s label", s.label);
    MEMOE_CHECK(!s.x.empty(), "cannot plot ", path, ": ", name, " has no points");
    MEMOE_CHECK(s.x.size() == s.y.size(), "cannot plot ", path, ": ", name, " has ", s.x.size(), " x values but ",
                s.y.size(), " y values");
    for (size_t k = 0; k < s.x.size(); ++k) {
      MEMOE_CHECK(std::isfinite(s.x[k]) && std::isfinite(s.y[k]), "cannot plot ", path, ": ", name, " point ", k,
                  " is not finite (", s.x[k], ", ", s.y[k], ")");
      MEMOE_CHECK(!plot.log_y || s.y[k] > 0.0, "cannot plot ", path, ": ", name, " point ", k, " has y = ", s.y[k],
                  ", not > 0 as a log axis needs");
      const double y = plot.log_y ? std::log10(s.y[k]) : s.y[k];
      x_lo = std::min(x_lo, s.x[k]), x_hi = std::max(x_hi, s.x[k]);
      y_lo = std::min(y_lo, y), y_hi = std::max(y_hi, y);
    }
  }
  MEMOE_CHECK(std::isfinite(x_hi - x_lo) && std::isfinite(y_hi - y_lo), "cannot plot ", path,
              ": the values span too wide a range to draw");
  const Range xr = padded(x_lo, x_hi, 0.02), yr = padded(y_lo, y_hi, 0.05);

  write_png(path, plot.width, plot.height, [&](PngPage& page) {
    const double t = page.text_mm();
    const LinearTicks x_ticks = linear_ticks(page, xr);
    const LinearTicks y_linear = linear_ticks(page, yr);
    const std::vector<Tick> y_ticks = plot.log_y ? log_ticks(yr) : std::vector<Tick>{};
    double y_tick_w = plot.log_y ? 0.0 : y_linear.label_width;
    for (const Tick& tick : y_ticks) y_tick_w = std::max(y_tick_w, page.text_width(tick.label));
    const double left = 0.6 * t + (plot.y_label.empty() ? 0.0 : 2.2 * t) + y_tick_w + 1.2 * t;
    const double bottom = 1.0 * t + (plot.x_label.empty() ? 0.0 : 2.0 * t) + 2.2 * t;
    const double top = plot.title.empty() ? 1.5 * t : 4.0 * t;
    const double right = 1.0 * t + 0.5 * x_ticks.label_width;  // room for the last x tick label
    page.viewport(left, right, bottom, top);
    plwind(xr.lo, xr.hi, yr.lo, yr.hi);
    AxisSteps steps{x_ticks.step, y_linear.step};
    plslabelfunc(label_tick, &steps);  // our labels, never PLplot's "(x10^n)"
    plcol0(kGrid);
    plbox("g", x_ticks.step, 0, plot.log_y ? "" : "g", y_linear.step, 0);
    if (plot.log_y) draw_log_y_axis(y_ticks, xr, yr, 0.012);
    for (size_t i = 0; i < plot.series.size(); ++i) {
      const Series& s = plot.series[i];
      std::vector<PLFLT> y(s.y);
      if (plot.log_y)
        for (PLFLT& v : y) v = std::log10(v);
      plcol0(kFirstSeries + PLINT(i % kSeriesColours.size()));
      plwidth(2.0);
      plline(PLINT(s.x.size()), s.x.data(), y.data());
      if (s.x.size() <= kMaxPointsWithMarkers) {
        page.text_size(0.6);
        plstring(PLINT(s.x.size()), s.x.data(), y.data(), "●");
        page.text_size(1.0);
      }
    }
    plwidth(1.0);
    plcol0(kInk);
    plbox("bcnsto", x_ticks.step, 0, plot.log_y ? "bc" : "bcnstvo", y_linear.step, 0);
    if (!plot.x_label.empty()) plmtex("b", 3.0, 0.5, 0.5, escape(plot.x_label).c_str());
    if (!plot.y_label.empty())
      plmtex("l", y_tick_w / t + 2.6, 0.5, 0.5, escape(plot.y_label).c_str());
    page.title(plot.title, left, right);
    draw_legend(page, plot, xr, yr, page.width_mm() - left - right, page.height_mm() - top - bottom);
  });
}

void write_heatmap_png(const std::string& path, const Heatmap& map) {
  check_size(path, map.width, map.height);
  check_text(path, "the title", map.title);
  check_text(path, "the x label", map.x_label);
  check_text(path, "the y label", map.y_label);
  check_text(path, "the scale label", map.scale_label);
  const size_t rows = map.row_labels.size(), cols = map.column_labels.size();
  MEMOE_CHECK(rows > 0 && cols > 0, "cannot plot ", path, ": a heatmap needs at least one row and one column label");
  MEMOE_CHECK(map.values.size() == rows, "cannot plot ", path, ": ", map.values.size(), " rows of values for ", rows,
              " row labels");
  for (const std::string& l : map.row_labels) check_text(path, "a row label", l);
  for (const std::string& l : map.column_labels) check_text(path, "a column label", l);
  double lo = INFINITY, hi = -INFINITY;
  for (size_t r = 0; r < rows; ++r) {
    MEMOE_CHECK(map.values[r].size() == cols, "cannot plot ", path, ": row ", r, " has ", map.values[r].size(),
                " values for ", cols, " column labels");
    for (size_t c = 0; c < cols; ++c) {
      MEMOE_CHECK(std::isfinite(map.values[r][c]), "cannot plot ", path, ": the value at row ", r, ", column ", c,
                  " is not finite (", map.values[r][c], ")");
      lo = std::min(lo, map.values[r][c]), hi = std::max(hi, map.values[r][c]);
    }
  }
  MEMOE_CHECK(std::isfinite(map.scale_min) && std::isfinite(map.scale_max) && map.scale_min <= map.scale_max,
              "cannot plot ", path, ": bad colour scale [", map.scale_min, ", ", map.scale_max, "]");
  MEMOE_CHECK(map.decimals >= 0 && map.decimals <= 12, "cannot plot ", path, ": ", map.decimals,
              " decimals out of range [0, 12]");
  const Range scale = map.scale_min < map.scale_max ? Range{map.scale_min, map.scale_max} : padded(lo, hi, 0.0);
  MEMOE_CHECK(std::isfinite(scale.hi - scale.lo), "cannot plot ", path, ": the values span too wide a range to draw");

  write_png(path, map.width, map.height, [&](PngPage& page) {
    std::vector<PLFLT> at, red, green, blue;
    for (size_t i = 0; i < kHeatColours.size(); ++i) {
      at.push_back(double(i) / double(kHeatColours.size() - 1));
      red.push_back(kHeatColours[i][0]), green.push_back(kHeatColours[i][1]), blue.push_back(kHeatColours[i][2]);
    }
    plscmap1l(1, PLINT(at.size()), at.data(), red.data(), green.data(), blue.data(), nullptr);

    const double t = page.text_mm();
    const double top = map.title.empty() ? 1.5 * t : 4.0 * t;
    const double bottom = 1.0 * t + (map.x_label.empty() ? 0.0 : 2.2 * t) + 2.0 * t;
    const double cell_h = (page.height_mm() - top - bottom) / double(rows);
    // Row labels at body size where they fit (in a cell's height, and in a
    // third of the page's width), smaller where not.
    double row_label_w = 0.0;
    for (const std::string& l : map.row_labels) row_label_w = std::max(row_label_w, page.text_width(l));
    const double row_scale =
        std::clamp(std::min(0.8 * cell_h / t, 0.3 * page.width_mm() / std::max(row_label_w, 1e-9)), 0.3, 1.0);
    row_label_w *= row_scale;
    const LinearTicks bar_ticks = linear_ticks(page, scale);
    const double left = 1.0 * t + (map.y_label.empty() ? 0.0 : 2.2 * t) + row_label_w + 0.8 * t;
    const double bar_gap = 1.5 * t, bar_w = 1.2 * t;
    const double right =
        bar_gap + bar_w + 0.8 * t + bar_ticks.label_width + (map.scale_label.empty() ? 0.0 : 2.2 * t) + 1.0 * t;
    const double cell_w = (page.width_mm() - left - right) / double(cols);
    MEMOE_CHECK(cell_w > 1.0 * t && cell_h > 0.6 * t, "cannot plot ", path, ": ", map.width, "x", map.height,
                " leaves no room for ", rows, "x", cols, " cells");

    // One text size for all values, and one for all column labels: the
    // largest at which every one fits its cell.
    std::vector<std::string> texts(rows * cols);
    double value_scale = std::min(1.0, 0.45 * cell_h / t), column_scale = 1.0;
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) {
        char text[64];
        std::snprintf(text, sizeof text, "%.*f", map.decimals, map.values[r][c]);
        texts[r * cols + c] = text;
        value_scale = std::min(value_scale, page.fitting_scale(text, 0.85 * cell_w, 1.0));
      }
    for (const std::string& l : map.column_labels)
      column_scale = std::min(column_scale, page.fitting_scale(l, 0.9 * cell_w, 1.0));

    page.viewport(left, right, bottom, top);
    plwind(0.0, double(cols), 0.0, double(rows));
    page.text_size(value_scale);
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) {
        const double f = std::clamp((map.values[r][c] - scale.lo) / (scale.hi - scale.lo), 0.0, 1.0);
        const double x0 = double(c), y0 = double(rows - 1 - r);  // row 0 on top
        PLFLT xs[] = {x0, x0 + 1, x0 + 1, x0}, ys[] = {y0, y0, y0 + 1, y0 + 1};
        plcol1(f);
        plfill(4, xs, ys);
        plcol0(heat_luminance(f) > 0.5 ? kInk : kWhiteInk);  // dark text on bright cells
        plptex(x0 + 0.5, y0 + 0.5, 1.0, 0.0, 0.5, texts[r * cols + c].c_str());
      }
    plcol0(kBackground);  // thin white lines between the cells
    for (size_t c = 1; c < cols; ++c) pljoin(double(c), 0.0, double(c), double(rows));
    for (size_t r = 1; r < rows; ++r) pljoin(0.0, double(r), double(cols), double(r));
    plcol0(kInk);
    plbox("bc", 0.0, 0, "bc", 0.0, 0);
    page.text_size(column_scale);
    for (size_t c = 0; c < cols; ++c)
      plmtex("b", 1.5 / column_scale, (double(c) + 0.5) / double(cols), 0.5, escape(map.column_labels[c]).c_str());
    page.text_size(row_scale);
    for (size_t r = 0; r < rows; ++r)
      plmtex("lv", 0.8 / row_scale, 1.0 - (double(r) + 0.5) / double(rows), 1.0, escape(map.row_labels[r]).c_str());
    page.text_size(1.0);
    if (!map.x_label.empty()) plmtex("b", 3.5, 0.5, 0.5, escape(map.x_label).c_str());
    if (!map.y_label.empty()) plmtex("l", (row_label_w + 0.8 * t) / t + 1.2, 0.5, 0.5, escape(map.y_label).c_str());
    page.title(map.title, left, right);

    // Colour bar: the scale as a vertical gradient, its values on the right.
    page.viewport(page.width_mm() - right + bar_gap, right - bar_gap - bar_w, bottom, top);
    plwind(0.0, 1.0, scale.lo, scale.hi);
    // Thin slices rather than plgradient, whose cairo pattern PLplot never frees.
    constexpr int kSlices = 256;
    for (int i = 0; i < kSlices; ++i) {
      const double y0 = scale.lo + (scale.hi - scale.lo) * i / kSlices;
      const double y1 = scale.lo + (scale.hi - scale.lo) * (i + 1.02) / kSlices;  // overlap: no seams
      PLFLT xs[] = {0, 1, 1, 0}, ys[] = {y0, y0, std::min(y1, scale.hi), std::min(y1, scale.hi)};
      plcol1((i + 0.5) / kSlices);
      plfill(4, xs, ys);
    }
    AxisSteps steps{1.0, bar_ticks.step};
    plslabelfunc(label_tick, &steps);
    plcol0(kInk);  // the frame, ticks and labels; plcol1 above left the last slice's colour
    plbox("bc", 0.0, 0, "bcmstvo", bar_ticks.step, 0);
    if (!map.scale_label.empty())
      plmtex("r", (0.8 * t + bar_ticks.label_width) / t + 1.2, 0.5, 0.5, escape(map.scale_label).c_str());
  });
}

}  // namespace memoe
