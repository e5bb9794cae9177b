#include "eval/plot.h"

#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/png.h"
#include "io/test_files.h"

namespace memoe {
namespace {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  Rgb at(int x, int y) const {
    const uint8_t* p = &rgb[(size_t(y) * size_t(width) + size_t(x)) * 3];
    return {p[0], p[1], p[2]};
  }
};

// Decodes a PNG with libpng into 8-bit RGB.
Image read_png(const std::string& path) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str())) throw Error("cannot read " + path);
  image.format = PNG_FORMAT_RGB;
  Image out;
  out.width = int(image.width);
  out.height = int(image.height);
  out.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.rgb.data(), 0, nullptr)) throw Error("cannot decode " + path);
  return out;
}

// Pixels in [x0, x1) x [y0, y1) that are clearly coloured (not white, grey or black).
int coloured_pixels(const Image& im, int x0, int y0, int x1, int y1) {
  int n = 0;
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) {
      const Rgb p = im.at(x, y);
      n += std::max({p.r, p.g, p.b}) - std::min({p.r, p.g, p.b}) > 40;
    }
  return n;
}

int pixels_of(const Image& im, Rgb color, int x0, int y0, int x1, int y1) {
  int n = 0;
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) n += im.at(x, y) == color;
  return n;
}

// A falling loss curve: data in the left and bottom of the plot, nothing top right.
std::vector<Series> loss_curves(bool labelled) {
  Series train{labelled ? "train" : "", {}, {}}, held{labelled ? "held-out" : "", {}, {}};
  for (int step = 0; step <= 1000; step += 5) {
    train.x.push_back(step);
    train.y.push_back(2.0 + 8.0 * std::exp(-step / 80.0));
    if (step % 100 == 0) held.x.push_back(step), held.y.push_back(2.3 + 8.0 * std::exp(-step / 80.0));
  }
  return {train, held};
}

class PlotTest : public io_testing::TempDirTest {};

TEST_F(PlotTest, PngRoundTripsPixels) {
  const std::vector<uint8_t> rgb = {255, 0, 0, 0, 255, 0, 0, 0, 255, 1, 2, 3, 250, 251, 252, 128, 64, 32};
  write_png_rgb(file("tiny.png"), 3, 2, rgb);
  const Image im = read_png(file("tiny.png"));
  EXPECT_EQ(im.width, 3);
  EXPECT_EQ(im.height, 2);
  EXPECT_EQ(im.rgb, rgb);
  EXPECT_EQ(regular_files(), 1);  // no temporary left behind
}

TEST_F(PlotTest, PngRejectsBadInput) {
  EXPECT_THROW(write_png_rgb(file("a.png"), 3, 2, std::vector<uint8_t>(17)), Error);
  EXPECT_THROW(write_png_rgb(file("a.png"), 0, 2, {}), Error);
  EXPECT_THROW(write_png_rgb(file("a.png"), -1, -1, std::vector<uint8_t>(3)), Error);
  const std::string bad = file("no/such/dir/a.png");
  try {
    write_png_rgb(bad, 1, 1, {0, 0, 0});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  EXPECT_EQ(regular_files(), 0);
}

TEST_F(PlotTest, DrawsDataAndLegend) {
  plot_lines_png(file("loss.png"), "Loss", "step", "loss", loss_curves(true), 800, 500);
  const Image im = read_png(file("loss.png"));
  ASSERT_EQ(im.width, 800);
  ASSERT_EQ(im.height, 500);
  EXPECT_EQ(im.at(2, 2), (Rgb{255, 255, 255}));  // white background
  // The curves cross the left half of the plot area.
  EXPECT_GT(coloured_pixels(im, 100, 60, 400, 440), 200);
  // The legend (top right, where there is no data) shows both series colours.
  EXPECT_GT(pixels_of(im, series_color(0), 560, 30, 800, 150), 10);
  EXPECT_GT(pixels_of(im, series_color(1), 560, 30, 800, 150), 10);

  // Without labels there is no legend, and that corner stays free of colour.
  plot_lines_png(file("nolegend.png"), "Loss", "step", "loss", loss_curves(false), 800, 500);
  EXPECT_EQ(coloured_pixels(read_png(file("nolegend.png")), 560, 30, 800, 150), 0);
}

TEST_F(PlotTest, HandlesNonFiniteSinglePointAndConstantSeries) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const std::vector<Series> odd = {{"gaps", {0, 1, 2, 3, 4}, {1.0, nan, 3.0, inf, 2.0}},
                                   {"", {nan}, {1.0}},
                                   {"empty", {}, {}}};
  plot_lines_png(file("odd.png"), "odd", "x", "y", odd);
  EXPECT_GT(coloured_pixels(read_png(file("odd.png")), 0, 0, 800, 500), 0);

  plot_lines_png(file("one.png"), "one point", "x", "y", {{"p", {3.0}, {0.5}}}, 400, 300);
  const Image one = read_png(file("one.png"));
  EXPECT_EQ(one.width, 400);
  EXPECT_GT(pixels_of(one, series_color(0), 100, 80, 300, 240), 5);  // the dot, mid-plot

  plot_lines_png(file("flat.png"), "flat", "x", "y", {{"c", {0, 1, 2}, {5, 5, 5}}}, 400, 300);
  const Image flat = read_png(file("flat.png"));
  EXPECT_GT(pixels_of(flat, series_color(0), 100, 80, 380, 240), 100);  // a line mid-height

  plot_lines_png(file("none.png"), "", "", "", {});
  EXPECT_TRUE(std::filesystem::exists(file("none.png")));
}

TEST_F(PlotTest, RejectsBadInput) {
  EXPECT_THROW(plot_lines_png(file("a.png"), "t", "x", "y", {{"bad", {1, 2}, {1}}}), Error);
  EXPECT_THROW(plot_lines_png(file("a.png"), "t", "x", "y", loss_curves(true), 10, 500), Error);
  const std::string bad = file("missing/a.png");
  try {
    plot_lines_png(bad, "t", "x", "y", loss_curves(true));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
}

TEST(PlotTicks, AreRoundEvenAndCoverTheRange) {
  const std::pair<double, double> ranges[] = {{0, 2.9}, {1.93, 10.8}, {-3, 7}, {0, 3000}, {1e-5, 4e-5}, {0.42, 0.43}};
  for (const auto& [lo, hi] : ranges) {
    const auto t = nice_ticks(lo, hi);
    ASSERT_GE(t.size(), 3u) << lo << ".." << hi;
    EXPECT_LE(t.size(), 11u) << lo << ".." << hi;
    EXPECT_LE(t.front(), lo);
    EXPECT_GE(t.back(), hi);
    const double step = t[1] - t[0];
    const double mantissa = step / std::pow(10.0, std::floor(std::log10(step)));
    EXPECT_TRUE(std::fabs(mantissa - 1) < 1e-6 || std::fabs(mantissa - 2) < 1e-6 || std::fabs(mantissa - 5) < 1e-6)
        << "step " << step;
    for (size_t i = 1; i < t.size(); ++i) EXPECT_NEAR(t[i] - t[i - 1], step, step * 1e-9);
  }
  EXPECT_EQ(nice_ticks(0, 2.9), (std::vector<double>{0, 1, 2, 3}));
  EXPECT_THROW(nice_ticks(1, 1), Error);
}

TEST(PlotTicks, FormatWithTheDecimalsTheStepNeeds) {
  EXPECT_EQ(format_tick(0.5, 0.5), "0.5");
  EXPECT_EQ(format_tick(1000, 500), "1000");
  EXPECT_EQ(format_tick(-0.25, 0.05), "-0.25");
  EXPECT_EQ(format_tick(0, 0.05), "0");
  EXPECT_EQ(format_tick(2e6, 5e5), "2.0e6");
  EXPECT_EQ(format_tick(1.5e-5, 5e-6), "1.5e-5");
}

}  // namespace
}  // namespace memoe
