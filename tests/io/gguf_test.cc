// The GGUF writer (io/gguf.h) byte by byte, its 16-bit and q8_0 encodings,
// and the export's refusals (model/gguf_export.h). llama.cpp itself reads
// the exports in tests/gguf (ctest Gguf.LlamaCppRunsTheExports).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "cli_runner.h"
#include "core/bf16.h"
#include "core/error.h"
#include "io/config.h"
#include "io/gguf.h"
#include "model/gguf_export.h"
#include "phrase_corpus.h"
#include "test_files.h"

namespace memoe {
namespace {

template <class T>
T at(const std::string& bytes, size_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}

TEST(Gguf, HalfRoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(float_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(float_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_f16(65520.0f), 0x7c00);  // rounds past the largest half
  EXPECT_EQ(float_to_f16(1e-8f), 0x0000);
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // the smallest subnormal
  EXPECT_EQ(float_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // a tie: to the even neighbour
  EXPECT_EQ(float_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(std::nanf("")))));
  // Every finite half survives the round trip.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00u) == 0x7c00u) continue;
    ASSERT_EQ(float_to_f16(f16_to_float(uint16_t(h))), uint16_t(h)) << h;
  }
}

TEST(Gguf, Q8BlocksKeepEachValueWithinHalfAStep) {
  std::vector<float> x(64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * float(i)) * (i < 32 ? 1.0f : 0.05f);
  const std::vector<uint8_t> q = encode_gguf_tensor(GgufTensorType::Q8_0, x.data(), 64);
  ASSERT_EQ(q.size(), 2u * 34);
  const std::vector<float> back = decode_q8_0(q.data(), 64);
  for (int b = 0; b < 2; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[size_t(b * 32 + i)]));
    // Half a step, plus the scale's own rounding to a half (2^-11 relative) times up to 127 steps.
    const float step = amax / 127.0f;
    for (int i = 0; i < 32; ++i)
      EXPECT_LE(std::fabs(back[size_t(b * 32 + i)] - x[size_t(b * 32 + i)]), 0.5f * step + 127.0f * step / 2048.0f)
          << b << " " << i;
  }
  EXPECT_THROW(encode_gguf_tensor(GgufTensorType::Q8_0, x.data(), 40), Error);
}

class GgufFile : public io_testing::TempDirTest {};

TEST_F(GgufFile, HeaderKeysTensorInfosAndAlignedData) {
  GgufWriter w;
  w.add_string("general.architecture", "deepseek2");
  w.add_u32("deepseek2.block_count", 3);
  const std::vector<float> a = {1, 2, 3}, b(32, 0.5f);
  w.add_tensor("a", {3}, GgufTensorType::F32, a.data());
  w.add_tensor("b", {16, 2}, GgufTensorType::F16, b.data());
  EXPECT_THROW(w.add_tensor("a", {3}, GgufTensorType::F32, a.data()), Error);
  w.write(file("x.gguf"));
  const std::string f = io_testing::read_bytes(file("x.gguf"));
  ASSERT_GE(f.size(), 24u);
  EXPECT_EQ(f.substr(0, 4), "GGUF");
  EXPECT_EQ(at<uint32_t>(f, 4), 3u);
  EXPECT_EQ(at<uint64_t>(f, 8), 2u);   // tensors
  EXPECT_EQ(at<uint64_t>(f, 16), 3u);  // keys, general.alignment among them
  size_t p = 24;
  EXPECT_EQ(at<uint64_t>(f, p), 20u);  // "general.architecture"
  EXPECT_EQ(f.substr(p + 8, 20), "general.architecture");
  p += 28;
  EXPECT_EQ(at<uint32_t>(f, p), 8u);  // string
  EXPECT_EQ(at<uint64_t>(f, p + 4), 9u);
  EXPECT_EQ(f.substr(p + 12, 9), "deepseek2");
  p += 21;
  EXPECT_EQ(f.substr(p + 8, 21), "deepseek2.block_count");
  p += 29;
  EXPECT_EQ(at<uint32_t>(f, p), 4u);  // u32
  EXPECT_EQ(at<uint32_t>(f, p + 4), 3u);
  p += 8;
  EXPECT_EQ(f.substr(p + 8, 17), "general.alignment");
  p += 25;
  EXPECT_EQ(at<uint32_t>(f, p + 4), 32u);
  p += 8;
  // Tensor "a": 1 dim of 3, F32, offset 0; "b": dims 16, 2, F16, offset 32 (12 bytes padded).
  EXPECT_EQ(f.substr(p + 8, 1), "a");
  p += 9;
  EXPECT_EQ(at<uint32_t>(f, p), 1u);
  EXPECT_EQ(at<uint64_t>(f, p + 4), 3u);
  EXPECT_EQ(at<uint32_t>(f, p + 12), 0u);
  EXPECT_EQ(at<uint64_t>(f, p + 16), 0u);
  p += 24;
  p += 9;
  EXPECT_EQ(at<uint32_t>(f, p), 2u);
  EXPECT_EQ(at<uint64_t>(f, p + 4), 16u);
  EXPECT_EQ(at<uint64_t>(f, p + 12), 2u);
  EXPECT_EQ(at<uint32_t>(f, p + 20), 1u);
  EXPECT_EQ(at<uint64_t>(f, p + 24), 32u);
  p += 32;
  const size_t data = (p + 31) / 32 * 32;
  EXPECT_EQ(at<float>(f, data + 8), 3.0f);
  EXPECT_EQ(at<uint16_t>(f, data + 32), 0x3800);  // 0.5 as a half
  EXPECT_EQ(f.size(), data + 32 + 64);
}

TEST(GgufExport, WhatLlamaCppCannotRunIsOneLine) {
  ModelConfig c = load_config(testing::tiny_config());
  EXPECT_NE(gguf_export_problem(c).find("Engram"), std::string::npos);
  c.engram.reset();
  EXPECT_EQ(gguf_export_problem(c), "");
  ModelConfig g = c;
  g.attention = AttentionKind::GQA;
  EXPECT_NE(gguf_export_problem(g).find("GQA"), std::string::npos);
  ModelConfig eps = c;
  eps.rms_norm_eps = 1e-5;
  EXPECT_NE(gguf_export_problem(eps).find("MLA latent norms"), std::string::npos);
  ModelConfig shared = c;
  shared.n_shared_experts = 0;
  EXPECT_NE(gguf_export_problem(shared).find("shared expert"), std::string::npos);
  ModelConfig lite = c;
  lite.num_hidden_layers = 27;
  EXPECT_NE(gguf_export_problem(lite).find("V2-Lite"), std::string::npos);
  ModelConfig yarn = c;
  yarn.rope_scaling = YarnConfig{4.0, 128, 16.0, 1.0, 1.0};
  EXPECT_NE(gguf_export_problem(yarn).find("beta_fast"), std::string::npos);
}

class GgufCli : public testing::CliTest {};

TEST_F(GgufCli, AnEngramModelOrABadDtypeIsRefusedWithOneLine) {
  ASSERT_EQ(memoe("init " + testing::tiny_config() + " --out " + path("m")).status, 0);
  const testing::CliResult r = memoe("export gguf --model " + path("m") + " --out " + path("m.gguf"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("cannot export " + path("m") + " to GGUF: the model has Engram layers"), std::string::npos)
      << r.err;
  EXPECT_FALSE(std::filesystem::exists(path("m.gguf")));
  const testing::CliResult d = memoe("export gguf --model " + path("m") + " --out " + path("m.gguf") + " --dtype q4");
  EXPECT_NE(d.status, 0);
  EXPECT_NE(d.err.find("--dtype must be f32, f16, bf16 or q8_0, not 'q4'"), std::string::npos) << d.err;
}

}  // namespace
}  // namespace memoe
