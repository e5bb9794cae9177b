// A RULER-style needle-in-a-haystack suite: needles ("One of the special
// magic numbers for KEY is: VALUE.") hidden at given depths in real text cut
// to given lengths in tokens, a question at the end, the answer generated
// greedily and scored by exact match of each expected value. The suite is
// built from a seed alone and holds token ids, so it can be dumped and
// reused by any implementation (--dump-prompts).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/retrieval_text.h"
#include "model/model.h"

namespace memoe {

struct NiahOptions {
  std::vector<int64_t> lengths = {512, 1024, 2048, 4096};  // prompt tokens, question included
  std::vector<int> depths = {0, 25, 50, 75, 100};          // percent of the context before the needle
  std::vector<RetrievalTask> tasks = all_retrieval_tasks();
  int64_t samples = 4;  // per task, length and depth
  uint64_t seed = 0;
  RetrievalCounts counts;
};

// What the suite needs of a tokenizer; tests pass a stand-in.
struct NiahCodec {
  std::function<std::vector<int32_t>(const std::string&)> encode;
  std::function<std::string(const std::vector<int32_t>&)> decode;
  int32_t document_start = 3;  // the end-of-text id that starts every training document
  // Optional: whether a token starts a word; needles then go before such a
  // token (the nearest within 16 of their place), never inside a word.
  std::function<bool(int32_t)> starts_word;
};

struct NiahNeedle {
  std::string key, value;
  int64_t position = 0;  // index in ids of its first token
  int64_t tokens = 0;
};

struct NiahSample {
  RetrievalTask task = RetrievalTask::single;
  int64_t length = 0;
  int depth = 0;
  int64_t index = 0;  // among the samples of this task, length and depth
  std::vector<int32_t> ids;  // exactly `length` tokens
  std::vector<NiahNeedle> needles;  // in the order of the item: needles[0] is at the depth
  std::vector<std::string> asked_keys, expected;
  int64_t max_answer_tokens = 0;
};

// Every sample of the suite, tasks x lengths x depths x samples, from the
// haystack's tokens (windows of it at seeded offsets). One line for a
// haystack shorter than the longest length, a length too short for its
// needles and question, a depth outside 0..100, or no tasks, lengths or
// depths. Keys and values come from the evaluation space only (checked).
std::vector<NiahSample> build_niah_suite(const NiahOptions& options, const NiahCodec& codec,
                                         const std::vector<int32_t>& haystack);

// The share of the expected values that appear in `answer` as whole numbers
// (exact digits, not inside a longer number): 1 when all do.
double niah_score(const NiahSample& sample, const std::string& answer);

// The greedy continuation of `ids` through the KV cache (one chunked
// prefill, then one decode step a token), up to max_tokens or `stop_id`;
// ids >= emit_vocab (vocabulary padding past the tokenizer's) are never
// chosen.
std::vector<int32_t> greedy_continuation(const Model& model, const std::vector<int32_t>& ids, int64_t max_tokens,
                                         int64_t stop_id, int64_t emit_vocab, int64_t prefill_chunk = 512);

struct NiahAnswer {
  std::string text;
  double score = 0;
};

// OUT/samples.jsonl (one record a sample: task, length, depth, keys,
// expected values, answer, score), OUT/summary.csv and OUT/summary.json
// (accuracy per task, length and depth, and per task), and per task
// OUT/niah_TASK.png (a heatmap: depth x length, the accuracy in each cell).
void write_niah_report(const std::string& out_dir, const std::vector<NiahSample>& samples,
                       const std::vector<NiahAnswer>& answers, const std::string& title);

// OUT/prompts.jsonl: every sample's ids, text, needles (key, value, token
// position and length), asked keys and expected values.
void write_niah_prompts(const std::string& out_dir, const std::vector<NiahSample>& samples, const NiahCodec& codec);

}  // namespace memoe
