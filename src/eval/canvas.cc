#include "eval/canvas.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "eval/bitmap_font.h"

namespace memoe {

Canvas::Canvas(int width, int height, Rgb background) : width_(width), height_(height) {
  MEMOE_CHECK(width > 0 && height > 0, "canvas size ", width, "x", height, " must be positive");
  pixels_.resize(size_t(width) * size_t(height) * 3);
  for (size_t i = 0; i < pixels_.size(); i += 3) {
    pixels_[i] = background.r;
    pixels_[i + 1] = background.g;
    pixels_[i + 2] = background.b;
  }
}

Rgb Canvas::at(int x, int y) const {
  MEMOE_CHECK(x >= 0 && y >= 0 && x < width_ && y < height_, "pixel (", x, ", ", y, ") is outside the canvas");
  const uint8_t* p = &pixels_[(size_t(y) * size_t(width_) + size_t(x)) * 3];
  return {p[0], p[1], p[2]};
}

void Canvas::fill_rect(Rect r, Rgb color) {
  for (int y = std::max(r.y0, 0); y < std::min(r.y1, height_); ++y)
    for (int x = std::max(r.x0, 0); x < std::min(r.x1, width_); ++x) blend(x, y, color, 1.0);
}

void Canvas::stroke_rect(Rect r, Rgb color) {
  fill_rect({r.x0, r.y0, r.x1, r.y0 + 1}, color);
  fill_rect({r.x0, r.y1 - 1, r.x1, r.y1}, color);
  fill_rect({r.x0, r.y0, r.x0 + 1, r.y1}, color);
  fill_rect({r.x1 - 1, r.y0, r.x1, r.y1}, color);
}

void Canvas::blend(int x, int y, Rgb color, double alpha) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_ || !(alpha > 0.0)) return;
  alpha = std::min(alpha, 1.0);
  uint8_t* p = &pixels_[(size_t(y) * size_t(width_) + size_t(x)) * 3];
  const uint8_t src[3] = {color.r, color.g, color.b};
  for (int c = 0; c < 3; ++c) p[c] = uint8_t(std::lround(p[c] + (src[c] - p[c]) * alpha));
}

void Canvas::polyline(const std::vector<Point>& points, double width, Rgb color, Rect clip) {
  clip = {std::max(clip.x0, 0), std::max(clip.y0, 0), std::min(clip.x1, width_), std::min(clip.y1, height_)};
  if (points.empty() || clip.x0 >= clip.x1 || clip.y0 >= clip.y1) return;
  // Coverage from each pixel centre's distance to the segment: full within
  // width/2, fading to zero over the next pixel. Simple, and smooth at any slope.
  const int cw = clip.x1 - clip.x0;
  std::vector<float> coverage(size_t(cw) * size_t(clip.y1 - clip.y0), 0.0f);
  const double half = width / 2.0, reach = half + 1.0;
  auto segment = [&](Point a, Point b) {
    const double lo_x = std::min(a.x, b.x) - reach, hi_x = std::max(a.x, b.x) + reach;
    const double lo_y = std::min(a.y, b.y) - reach, hi_y = std::max(a.y, b.y) + reach;
    if (hi_x < clip.x0 || lo_x > clip.x1 || hi_y < clip.y0 || lo_y > clip.y1) return;
    const int x0 = std::max(clip.x0, int(std::floor(lo_x))), x1 = std::min(clip.x1, int(std::ceil(hi_x)) + 1);
    const int y0 = std::max(clip.y0, int(std::floor(lo_y))), y1 = std::min(clip.y1, int(std::ceil(hi_y)) + 1);
    const double dx = b.x - a.x, dy = b.y - a.y, len2 = dx * dx + dy * dy;
    for (int y = y0; y < y1; ++y) {
      for (int x = x0; x < x1; ++x) {
        const double px = x + 0.5 - a.x, py = y + 0.5 - a.y;
        const double t = len2 > 0.0 ? std::clamp((px * dx + py * dy) / len2, 0.0, 1.0) : 0.0;
        const double ex = px - t * dx, ey = py - t * dy;
        const float c = float(std::clamp(half + 0.5 - std::sqrt(ex * ex + ey * ey), 0.0, 1.0));
        float& slot = coverage[size_t(y - clip.y0) * size_t(cw) + size_t(x - clip.x0)];
        slot = std::max(slot, c);
      }
    }
  };
  if (points.size() == 1) segment(points[0], points[0]);
  for (size_t i = 1; i < points.size(); ++i) segment(points[i - 1], points[i]);
  for (int y = clip.y0; y < clip.y1; ++y)
    for (int x = clip.x0; x < clip.x1; ++x)
      blend(x, y, color, coverage[size_t(y - clip.y0) * size_t(cw) + size_t(x - clip.x0)]);
}

void Canvas::text(int x, int y, const std::string& utf8, int scale, Rgb color, bool vertical) {
  const std::string glyphs = font::to_glyph_text(utf8);
  const int total = font::text_width(utf8, 1);
  for (size_t i = 0; i < glyphs.size(); ++i) {
    const uint8_t* rows = font::glyph_rows(glyphs[i]);
    for (int row = 0; row < font::kGlyphRows; ++row) {
      for (int col = 0; col < font::kGlyphWidth; ++col) {
        if (!(rows[row] & (0x10 >> col))) continue;
        // (u, v): position in unrotated text space, in font pixels.
        const int u = int(i) * font::kAdvance + col, v = row;
        const int px = vertical ? x + v * scale : x + u * scale;
        const int py = vertical ? y + (total - 1 - u) * scale : y + v * scale;
        fill_rect({px, py, px + scale, py + scale}, color);
      }
    }
  }
}

}  // namespace memoe
