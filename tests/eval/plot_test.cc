#include "eval/plot.h"

#include <gtest/gtest.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/test_files.h"

namespace memoe {
namespace {

struct Rgb {
  int r = 0, g = 0, b = 0;
  int chroma() const { return std::max({r, g, b}) - std::min({r, g, b}); }
  bool white() const { return r == 255 && g == 255 && b == 255; }
  bool dark() const { return r + g + b < 3 * 90; }
};

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  Rgb at(int x, int y) const {
    const uint8_t* p = &rgb[(size_t(y) * size_t(width) + size_t(x)) * 3];
    return {p[0], p[1], p[2]};
  }
  // Pixels in [x0, x1) x [y0, y1) for which `pred` holds.
  template <typename Pred>
  int count(int x0, int y0, int x1, int y1, Pred pred) const {
    int n = 0;
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) n += pred(at(x, y));
    return n;
  }
};

// Width and height from the PNG header: the 8-byte signature, then the
// IHDR chunk (length, "IHDR", big-endian width, big-endian height).
std::pair<uint32_t, uint32_t> png_header_size(const std::string& bytes) {
  EXPECT_GE(bytes.size(), 24u);
  if (bytes.size() < 24) return {0, 0};
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(bytes.substr(12, 4), "IHDR");
  auto be32 = [&](size_t at) {
    return uint32_t(uint8_t(bytes[at])) << 24 | uint32_t(uint8_t(bytes[at + 1])) << 16 |
           uint32_t(uint8_t(bytes[at + 2])) << 8 | uint32_t(uint8_t(bytes[at + 3]));
  };
  return {be32(16), be32(20)};
}

// Decodes a PNG with libpng into 8-bit RGB (composited over white).
Image read_png(const std::string& path) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str())) throw Error("cannot read " + path);
  image.format = PNG_FORMAT_RGB;
  Image out;
  out.width = int(image.width);
  out.height = int(image.height);
  out.rgb.resize(PNG_IMAGE_SIZE(image));
  const png_color white{255, 255, 255};
  if (!png_image_finish_read(&image, &white, out.rgb.data(), 0, nullptr)) throw Error("cannot decode " + path);
  return out;
}

// A falling loss curve: data in the left and bottom of the plot, nothing top right.
LinePlot loss_plot(bool labelled) {
  Series train{labelled ? "train loss" : "", {}, {}}, held{labelled ? "held-out loss" : "", {}, {}};
  for (int step = 0; step <= 1000; step += 5) {
    train.x.push_back(step);
    train.y.push_back(2.0 + 8.0 * std::exp(-step / 80.0) + 0.15 * std::sin(step * 0.7));
    if (step % 100 == 0) held.x.push_back(step), held.y.push_back(2.3 + 8.0 * std::exp(-step / 80.0));
  }
  return {"memoe training loss", "step", "loss (nats/token)", {train, held}};
}

// Needle-in-a-haystack accuracy: rows are depths, columns context lengths.
Heatmap accuracy_map() {
  Heatmap m;
  m.title = "retrieval accuracy";
  m.x_label = "context length (tokens)";
  m.y_label = "needle depth";
  m.column_labels = {"512", "1024", "2048", "4096"};
  m.row_labels = {"0 %", "25 %", "50 %", "75 %", "100 %"};
  m.values = {{1.00, 0.98, 0.91, 0.72},
              {0.99, 0.95, 0.83, 0.55},
              {0.97, 0.90, 0.70, 0.38},
              {0.98, 0.93, 0.78, 0.47},
              {1.00, 0.99, 0.94, 0.81}};
  m.scale_label = "accuracy";
  return m;
}

class PlotTest : public io_testing::TempDirTest {
 protected:
  // The file's header says width x height, and no temporary is left beside it.
  void expect_png(const std::string& path, int width, int height) {
    const auto [w, h] = png_header_size(io_testing::read_bytes(path));
    EXPECT_EQ(w, uint32_t(width));
    EXPECT_EQ(h, uint32_t(height));
    for (const auto& entry : std::filesystem::directory_iterator(dir_))
      EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << entry.path();
  }

  // Runs `f`, expects a one-line memoe::Error that names `path`, and that
  // nothing was written to the directory.
  template <typename F>
  void expect_error(const std::string& path, F f) {
    const int before = regular_files();
    try {
      f();
      ADD_FAILURE() << "expected an error for " << path;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(path), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
    EXPECT_EQ(regular_files(), before);
    EXPECT_FALSE(std::filesystem::exists(path));
  }
};

TEST_F(PlotTest, LossPlotIsAPngOfTheRequestedSizeWithCurvesAndLegend) {
  write_line_plot_png(file("loss.png"), loss_plot(true));
  expect_png(file("loss.png"), 800, 500);
  const Image im = read_png(file("loss.png"));
  ASSERT_EQ(im.width, 800);
  ASSERT_EQ(im.height, 500);
  EXPECT_TRUE(im.at(2, 2).white());
  // Coloured curves run through the plot area, dark text and frame around it.
  EXPECT_GT(im.count(0, 0, 800, 500, [](Rgb p) { return p.chroma() > 60; }), 1500);
  EXPECT_GT(im.count(0, 0, 800, 500, [](Rgb p) { return p.dark(); }), 2000);
  // Text on each side: title on top, tick labels and axis labels left and bottom.
  EXPECT_GT(im.count(200, 0, 600, 40, [](Rgb p) { return p.dark(); }), 100);
  EXPECT_GT(im.count(0, 100, 60, 400, [](Rgb p) { return p.dark(); }), 100);
  EXPECT_GT(im.count(200, 450, 600, 500, [](Rgb p) { return p.dark(); }), 100);
  // The legend sits top right (where the falling curves leave room) and shows
  // both series' colours; without labels that corner has no colour at all.
  const auto blue = [](Rgb p) { return p.b > 150 && p.r < 90; };
  const auto orange = [](Rgb p) { return p.r > 200 && p.g > 90 && p.g < 160 && p.b < 60; };
  EXPECT_GT(im.count(560, 40, 800, 140, blue), 20);
  EXPECT_GT(im.count(560, 40, 800, 140, orange), 20);
  write_line_plot_png(file("nolegend.png"), loss_plot(false));
  EXPECT_EQ(read_png(file("nolegend.png")).count(560, 40, 780, 140, [](Rgb p) { return p.chroma() > 60; }), 0);
}

TEST_F(PlotTest, LinePlotsTakeOtherSizesLogAxesAndShortSeries) {
  LinePlot log = loss_plot(true);
  log.log_y = true;
  log.width = 1200, log.height = 700;
  write_line_plot_png(file("log.png"), log);
  expect_png(file("log.png"), 1200, 700);

  LinePlot small{"one point and a flat line", "x", "y", {{"p", {3.0}, {0.5}}, {"c", {0, 1, 2}, {5, 5, 5}}}};
  small.width = 400, small.height = 300;
  write_line_plot_png(file("small.png"), small);
  expect_png(file("small.png"), 400, 300);
  EXPECT_GT(read_png(file("small.png")).count(0, 0, 400, 300, [](Rgb p) { return p.chroma() > 60; }), 100);
}

TEST_F(PlotTest, HeatmapIsAPngWithColouredCellsAndTheirValues) {
  write_heatmap_png(file("map.png"), accuracy_map());
  expect_png(file("map.png"), 800, 600);
  const Image im = read_png(file("map.png"));
  ASSERT_EQ(im.width, 800);
  ASSERT_EQ(im.height, 600);
  // Most of the image is coloured cells, and both ends of the scale appear:
  // dark purple (low) and bright yellow (high).
  EXPECT_GT(im.count(0, 0, 800, 600, [](Rgb p) { return p.chroma() > 60; }), 800 * 600 / 4);
  EXPECT_GT(im.count(0, 0, 800, 600, [](Rgb p) { return p.r > 200 && p.g > 200 && p.b < 80; }), 1000);
  EXPECT_GT(im.count(0, 0, 800, 600, [](Rgb p) { return p.b > p.g + 30 && p.r > 40 && p.g < 120; }), 1000);
  // Labels left of and below the grid, a title above it.
  EXPECT_GT(im.count(0, 100, 110, 500, [](Rgb p) { return p.dark(); }), 200);
  EXPECT_GT(im.count(100, 540, 650, 600, [](Rgb p) { return p.dark(); }), 200);
  EXPECT_GT(im.count(150, 0, 650, 45, [](Rgb p) { return p.dark(); }), 100);
}

TEST_F(PlotTest, HeatmapPrintsEachValueInItsCell) {
  // Two cells of equal colour; only the printed text differs between them.
  Heatmap m;
  m.column_labels = {"a", "b"};
  m.row_labels = {"r"};
  m.values = {{0.5, 0.5}};
  m.width = 400, m.height = 300;
  write_heatmap_png(file("same.png"), m);
  const Image same = read_png(file("same.png"));
  m.values = {{0.5, 0.5000001}};
  m.decimals = 6;
  write_heatmap_png(file("text.png"), m);
  const Image text = read_png(file("text.png"));
  ASSERT_EQ(same.rgb.size(), text.rgb.size());
  size_t differing = 0;
  for (size_t i = 0; i < same.rgb.size(); ++i) differing += same.rgb[i] != text.rgb[i];
  EXPECT_GT(differing, 100u);
}

TEST_F(PlotTest, RejectsBadInputWithOneLineAndWritesNothing) {
  const std::string p = file("bad.png");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  expect_error(p, [&] { write_line_plot_png(p, LinePlot{"t", "x", "y", {}}); });
  expect_error(p, [&] { write_line_plot_png(p, LinePlot{"t", "x", "y", {{"empty", {}, {}}}}); });
  expect_error(p, [&] { write_line_plot_png(p, LinePlot{"t", "x", "y", {{"bad", {1, 2}, {1}}}}); });
  expect_error(p, [&] { write_line_plot_png(p, LinePlot{"t", "x", "y", {{"nan", {1, 2}, {1, nan}}}}); });
  expect_error(p, [&] {
    LinePlot log{"t", "x", "y", {{"zero", {1, 2}, {1, 0}}}};
    log.log_y = true;
    write_line_plot_png(p, log);
  });
  expect_error(p, [&] {
    LinePlot tiny = loss_plot(true);
    tiny.width = 10;
    write_line_plot_png(p, tiny);
  });
  expect_error(p, [&] { write_line_plot_png(p, LinePlot{"two\nlines", "x", "y", loss_plot(true).series}); });

  expect_error(p, [&] {
    Heatmap m = accuracy_map();
    m.values.pop_back();  // 4 rows of values, 5 row labels
    write_heatmap_png(p, m);
  });
  expect_error(p, [&] {
    Heatmap m = accuracy_map();
    m.values[2].push_back(0.5);  // a ragged row
    write_heatmap_png(p, m);
  });
  expect_error(p, [&] {
    Heatmap m = accuracy_map();
    m.values[1][1] = nan;
    write_heatmap_png(p, m);
  });
  expect_error(p, [&] {
    Heatmap m = accuracy_map();
    m.row_labels.clear(), m.values.clear();
    write_heatmap_png(p, m);
  });
  expect_error(p, [&] {
    Heatmap m = accuracy_map();
    m.scale_min = 1.0, m.scale_max = 0.0;
    write_heatmap_png(p, m);
  });

  // Too many cells for the image: found while drawing, after the temporary
  // file was opened, which must go again.
  expect_error(p, [&] {
    Heatmap m = accuracy_map();
    m.width = m.height = 200;
    for (auto& row : m.values) row.resize(60, 0.5);
    m.column_labels.resize(60, "x");
    write_heatmap_png(p, m);
  });

  const std::string unwritable = file("no/such/dir/loss.png");
  expect_error(unwritable, [&] { write_line_plot_png(unwritable, loss_plot(true)); });
  expect_error(unwritable, [&] { write_heatmap_png(unwritable, accuracy_map()); });
}

TEST_F(PlotTest, AFailedWriteLeavesNoTemporary) {
  // The target is a directory: drawing succeeds, publishing fails.
  std::filesystem::create_directory(file("taken.png"));
  EXPECT_THROW(write_line_plot_png(file("taken.png"), loss_plot(true)), Error);
  EXPECT_EQ(regular_files(), 0);
  EXPECT_TRUE(std::filesystem::is_directory(file("taken.png")));
}

TEST_F(PlotTest, AFailedRenderKeepsTheOldFile) {
  write_line_plot_png(file("loss.png"), loss_plot(true));
  const std::string before = io_testing::read_bytes(file("loss.png"));
  LinePlot bad = loss_plot(true);
  bad.series[0].y[3] = std::numeric_limits<double>::infinity();
  EXPECT_THROW(write_line_plot_png(file("loss.png"), bad), Error);
  EXPECT_EQ(io_testing::read_bytes(file("loss.png")), before);
  EXPECT_EQ(regular_files(), 1);
}

}  // namespace
}  // namespace memoe
