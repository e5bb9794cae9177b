#include "io/png.h"

#include <png.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "core/error.h"
#include "io/atomic_file.h"

namespace memoe {

namespace {

// libpng reports errors by longjmp, which must not cross C++ frames with
// destructors. So the encoder below touches only plain C state, writes into
// a malloc'ed growable buffer, and returns a message instead of throwing.
struct ByteSink {
  unsigned char* data = nullptr;
  size_t size = 0, capacity = 0;
  bool out_of_memory = false;
};

void sink_write(png_structp png, png_bytep bytes, png_size_t n) {
  auto* sink = static_cast<ByteSink*>(png_get_io_ptr(png));
  if (sink->size + n > sink->capacity) {
    size_t cap = sink->capacity ? sink->capacity : 4096;
    while (cap < sink->size + n) cap *= 2;
    void* grown = std::realloc(sink->data, cap);
    if (!grown) {
      sink->out_of_memory = true;
      png_error(png, "out of memory");
    }
    sink->data = static_cast<unsigned char*>(grown);
    sink->capacity = cap;
  }
  std::memcpy(sink->data + sink->size, bytes, n);
  sink->size += n;
}

void sink_flush(png_structp) {}

// Keeps libpng's message instead of printing it, then jumps back.
void on_png_error(png_structp png, png_const_charp message) {
  auto* buffer = static_cast<char*>(png_get_error_ptr(png));
  std::strncpy(buffer, message, 255);
  buffer[255] = '\0';
  png_longjmp(png, 1);
}

void on_png_warning(png_structp, png_const_charp) {}

// Returns true on success; otherwise `error` holds libpng's reason.
bool encode_png(int width, int height, const uint8_t* rgb, ByteSink* sink, char* error) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, error, on_png_error, on_png_warning);
  if (!png) {
    std::strcpy(error, "cannot create the PNG encoder");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    std::strcpy(error, "cannot create the PNG encoder");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_set_write_fn(png, sink, sink_write, sink_flush);
  png_set_IHDR(png, info, png_uint_32(width), png_uint_32(height), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  const size_t stride = size_t(width) * 3;
  for (int y = 0; y < height; ++y) png_write_row(png, const_cast<png_bytep>(rgb + size_t(y) * stride));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

void write_png_rgb(const std::string& path, int width, int height, const std::vector<uint8_t>& rgb) {
  // PNG allows 2^31-1, but libpng's default limit is 1,000,000 per side.
  constexpr int kMaxSide = 1000000;
  MEMOE_CHECK(width > 0 && height > 0 && width <= kMaxSide && height <= kMaxSide, "cannot write ", path,
              ": image size ", width, "x", height, " out of range");
  MEMOE_CHECK(rgb.size() == size_t(width) * size_t(height) * 3,
              "cannot write ", path, ": ", rgb.size(), " bytes of pixels for a ", width, "x", height,
              " RGB image (want ", size_t(width) * size_t(height) * 3, ")");
  ByteSink sink;
  char error[256] = {0};
  const bool ok = encode_png(width, height, rgb.data(), &sink, error);
  std::string bytes;
  if (ok) {
    try {
      bytes.assign(reinterpret_cast<const char*>(sink.data), sink.size);
    } catch (...) {
      std::free(sink.data);
      throw;
    }
  }
  std::free(sink.data);
  if (!ok) {
    if (sink.out_of_memory) throw std::bad_alloc();
    fail("cannot write ", path, ": PNG encoding failed: ", error);
  }
  write_file_atomic(path, bytes);
}

}  // namespace memoe
