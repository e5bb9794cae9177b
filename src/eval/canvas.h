// An RGB raster with the few drawing operations charts need: rectangles,
// anti-aliased thick lines, dots and bitmap-font text.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace memoe {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

struct Point {
  double x = 0.0, y = 0.0;
};

// Pixel-aligned rectangle [x0, x1) x [y0, y1).
struct Rect {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

class Canvas {
 public:
  Canvas(int width, int height, Rgb background);

  int width() const { return width_; }
  int height() const { return height_; }
  const std::vector<uint8_t>& pixels() const { return pixels_; }  // rows top first, RGB
  Rgb at(int x, int y) const;

  // Pixels outside the canvas are ignored.
  void fill_rect(Rect r, Rgb color);
  void blend(int x, int y, Rgb color, double alpha);
  // Outline one pixel wide, inside r.
  void stroke_rect(Rect r, Rgb color);

  // Anti-aliased connected segments of the given width through points in
  // pixel coordinates (pixel (i, j) covers [i, i+1) x [j, j+1)), drawn only
  // inside `clip`. Each pixel is blended once with its largest coverage, so
  // joints and dense zig-zags do not darken. One point draws a dot.
  void polyline(const std::vector<Point>& points, double width, Rgb color, Rect clip);
  // Filled anti-aliased disc, drawn only inside `clip`.
  void dot(double cx, double cy, double radius, Rgb color, Rect clip) { polyline({{cx, cy}}, 2.0 * radius, color, clip); }

  // Text with its top-left corner at (x, y), glyph pixels scaled by `scale`.
  // `vertical` turns it 90 degrees counter-clockwise (reading bottom to top,
  // the text then runs upward from (x, y + width) to (x, y)).
  void text(int x, int y, const std::string& utf8, int scale, Rgb color, bool vertical = false);

 private:
  int width_, height_;
  std::vector<uint8_t> pixels_;
};

}  // namespace memoe
