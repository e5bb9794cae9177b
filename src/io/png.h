// PNG output (8-bit RGB) for charts and images.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace memoe {

// Writes an 8-bit RGB image, rows top to bottom, 3 bytes per pixel, to
// `path` atomically (the file is either the old one or the whole new one).
// Errors (bad size, unwritable path) are memoe::Error naming the path.
void write_png_rgb(const std::string& path, int width, int height, const std::vector<uint8_t>& rgb);

}  // namespace memoe
