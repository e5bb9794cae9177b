// A memoe model as llama.cpp's `deepseek2` architecture (GGUF v3): a model
// without Engram is a DeepSeek-V3-style model (MLA, DeepSeekMoE with shared
// experts, sigmoid or softmax routing, group-limited routing, YaRN), which
// llama.cpp runs. The keys, tensor names and layouts are llama.cpp's
// (src/models/deepseek2.cpp and its converter of the version node-llama-cpp
// ships); docs/gguf.md lists them. MLA is written in llama.cpp's absorbed
// form: kv_b_proj split per head into attn_k_b [H, kv_lora, nope] and
// attn_v_b [H, v, kv_lora].
#pragma once
#include <string>

#include "io/gguf.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace memoe {

// Why llama.cpp cannot run this config as deepseek2 ("" when it can): one
// line naming the part (Engram, GQA, a latent-norm epsilon llama.cpp does
// not separate, YaRN betas it fixes, ...).
std::string gguf_export_problem(const ModelConfig& cfg);

struct GgufExportSummary {
  int tensors = 0;
  int64_t bytes = 0;           // of the tensors' data
  int kept_f32 = 0;            // matrices q8_0 could not block (a row not a multiple of 32), kept in f32
};

// Writes `out` atomically: the model's weights (matrices in `dtype`, norms,
// router and biases in f32) and the tokenizer as GGUF's `llama` (SPM)
// tokenizer, padded with unused pieces up to vocab_size. A model llama.cpp
// cannot run is refused with gguf_export_problem's line.
GgufExportSummary export_gguf(const Model& model, const Tokenizer& tokenizer, const std::string& out,
                              GgufTensorType dtype);

}  // namespace memoe
