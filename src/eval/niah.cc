#include "eval/niah.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "eval/plot.h"
#include "io/atomic_file.h"
#include "model/inference.h"

namespace memoe {

using nlohmann::json;

namespace {

// The sample's own generator: a pure function of the seed and its place in
// the suite, so one sample can be rebuilt without the others.
Rng sample_rng(uint64_t seed, RetrievalTask task, int64_t length, int depth, int64_t index) {
  uint64_t h = seed * 0x9E3779B97F4A7C15ull;
  for (uint64_t part : {uint64_t(task) + 1, uint64_t(length), uint64_t(depth) + 7, uint64_t(index) + 11})
    h = (h ^ part) * 0x100000001b3ull + 0x632BE59BD9B4E019ull;
  return Rng(h);
}

}  // namespace

std::vector<NiahSample> build_niah_suite(const NiahOptions& o, const NiahCodec& codec,
                                         const std::vector<int32_t>& haystack) {
  MEMOE_CHECK(!o.tasks.empty(), "niah: no tasks");
  MEMOE_CHECK(!o.lengths.empty(), "niah: no lengths");
  MEMOE_CHECK(!o.depths.empty(), "niah: no depths");
  MEMOE_CHECK(o.samples >= 1, "niah: --samples must be >= 1");
  for (int d : o.depths) MEMOE_CHECK(d >= 0 && d <= 100, "niah: depth ", d, " is outside 0..100 (percent)");
  const int64_t longest = *std::max_element(o.lengths.begin(), o.lengths.end());
  for (int64_t l : o.lengths) MEMOE_CHECK(l >= 1, "niah: length ", l, " must be positive");
  MEMOE_CHECK(int64_t(haystack.size()) >= longest, "niah: the haystack has ", haystack.size(),
              " tokens, fewer than the longest length ", longest);
  std::vector<NiahSample> out;
  for (RetrievalTask task : o.tasks)
    for (int64_t length : o.lengths)
      for (int depth : o.depths)
        for (int64_t index = 0; index < o.samples; ++index) {
          Rng rng = sample_rng(o.seed, task, length, depth, index);
          const RetrievalItem item = draw_retrieval_item(rng, task, KeySpace::evaluation, o.counts);
          for (const auto& [k, v] : item.needles)
            MEMOE_CHECK(key_space(k) == KeySpace::evaluation && value_space(v) == KeySpace::evaluation,
                        "niah: needle ", k, " = ", v, " is not in the evaluation space");
          std::vector<std::vector<int32_t>> needle_ids;
          int64_t needle_tokens = 0;
          for (const auto& [k, v] : item.needles) {
            needle_ids.push_back(codec.encode(needle_text(k, v)));
            needle_tokens += int64_t(needle_ids.back().size());
          }
          const std::vector<int32_t> question = codec.encode(question_text(item));
          const int64_t hay = length - 1 - needle_tokens - int64_t(question.size());
          MEMOE_CHECK(hay >= 0, "niah: length ", length, " is too short for a ", retrieval_task_name(task),
                      " prompt (its needles and question alone take ", 1 + needle_tokens + int64_t(question.size()),
                      " tokens)");
          // Where each needle goes, in haystack tokens: the first at the
          // depth, the others anywhere.
          std::vector<int64_t> at(item.needles.size());
          at[0] = int64_t(std::llround(double(depth) / 100.0 * double(hay)));
          for (size_t n = 1; n < at.size(); ++n) at[n] = int64_t(rng.below(uint64_t(hay) + 1));
          const int64_t offset = int64_t(rng.below(uint64_t(int64_t(haystack.size()) - hay) + 1));
          if (codec.starts_word)
            for (int64_t& p : at) {
              auto boundary = [&](int64_t q) {
                return q == 0 || q == hay || codec.starts_word(haystack[size_t(offset + q)]);
              };
              for (int64_t step = 0; step <= 16; ++step) {
                if (p - step >= 0 && boundary(p - step)) { p -= step; break; }
                if (p + step <= hay && boundary(p + step)) { p += step; break; }
              }
            }

          NiahSample s;
          s.task = task;
          s.length = length;
          s.depth = depth;
          s.index = index;
          s.asked_keys = item.asked_keys;
          s.expected = item.expected_values;
          s.max_answer_tokens = 10 * int64_t(item.expected_values.size()) + 4;
          s.needles.resize(item.needles.size());
          s.ids.reserve(size_t(length));
          s.ids.push_back(codec.document_start);
          const std::vector<int64_t> where =
              append_with_needles(s.ids, haystack.data() + offset, hay, needle_ids, at);
          for (size_t n = 0; n < where.size(); ++n)
            s.needles[n] = {item.needles[n].first, item.needles[n].second, where[n], int64_t(needle_ids[n].size())};
          s.ids.insert(s.ids.end(), question.begin(), question.end());
          MEMOE_CHECK(int64_t(s.ids.size()) == length, "niah: built ", s.ids.size(), " tokens for length ", length);
          out.push_back(std::move(s));
        }
  return out;
}

double niah_score(const NiahSample& sample, const std::string& answer) {
  // The whole numbers in the answer.
  std::vector<std::string> numbers;
  std::string run;
  for (char c : answer + " ") {
    if (std::isdigit(static_cast<unsigned char>(c))) {
      run += c;
    } else if (!run.empty()) {
      numbers.push_back(run);
      run.clear();
    }
  }
  if (sample.expected.empty()) return 0.0;
  int64_t found = 0;
  for (const std::string& v : sample.expected) found += std::count(numbers.begin(), numbers.end(), v) > 0;
  return double(found) / double(sample.expected.size());
}

std::vector<int32_t> greedy_continuation(const Model& model, const std::vector<int32_t>& ids, int64_t max_tokens,
                                         int64_t stop_id, int64_t emit_vocab, int64_t prefill_chunk) {
  MEMOE_CHECK(!ids.empty(), "greedy continuation of an empty prompt");
  const int64_t V = model.config.vocab_size, emit = emit_vocab > 0 ? std::min(emit_vocab, V) : V;
  const std::vector<int64_t> wide(ids.begin(), ids.end());
  check_token_ids(model.config, wide.data(), int64_t(wide.size()));
  SequenceState seq = new_sequence(model);
  Tensor logits;
  feed_tokens(model, seq, wide.data(), int64_t(wide.size()), prefill_chunk, Logits::Last, logits);
  std::vector<int32_t> out;
  const int64_t context = model.config.max_position_embeddings;
  for (int64_t step = 0; step < max_tokens; ++step) {
    const float* row = logits.data();
    const int64_t next = std::max_element(row, row + emit) - row;
    if (next == stop_id) break;
    out.push_back(int32_t(next));
    if (step + 1 == max_tokens || seq.length >= context) break;
    feed_tokens(model, seq, &next, 1, 1, Logits::Last, logits);
  }
  return out;
}

namespace {

std::string depth_label(int d) { return std::to_string(d) + "%"; }

struct Cell {
  double sum = 0;
  int64_t count = 0;
};

}  // namespace

void write_niah_report(const std::string& out_dir, const std::vector<NiahSample>& samples,
                       const std::vector<NiahAnswer>& answers, const std::string& title) {
  MEMOE_CHECK(samples.size() == answers.size(), "niah report: ", answers.size(), " answers for ", samples.size(),
              " samples");
  std::filesystem::create_directories(out_dir);
  std::string jsonl;
  std::map<RetrievalTask, std::map<std::pair<int64_t, int>, Cell>> cells;
  std::map<RetrievalTask, Cell> per_task;
  std::vector<int64_t> lengths;
  std::vector<int> depths;
  for (size_t i = 0; i < samples.size(); ++i) {
    const NiahSample& s = samples[i];
    jsonl += json{{"task", retrieval_task_name(s.task)}, {"length", s.length},   {"depth", s.depth},
                  {"index", s.index},                    {"keys", s.asked_keys}, {"expected", s.expected},
                  {"answer", answers[i].text},           {"score", answers[i].score}}
                 .dump() +
             "\n";
    Cell& c = cells[s.task][{s.length, s.depth}];
    c.sum += answers[i].score, c.count += 1;
    per_task[s.task].sum += answers[i].score, per_task[s.task].count += 1;
    if (std::find(lengths.begin(), lengths.end(), s.length) == lengths.end()) lengths.push_back(s.length);
    if (std::find(depths.begin(), depths.end(), s.depth) == depths.end()) depths.push_back(s.depth);
  }
  std::sort(lengths.begin(), lengths.end());
  std::sort(depths.begin(), depths.end());
  write_file_atomic(out_dir + "/samples.jsonl", jsonl);

  std::ostringstream csv;
  csv << "task,length,depth,accuracy,samples\n";
  json summary = {{"title", title}, {"tasks", json::object()}};
  for (const auto& [task, by_cell] : cells) {
    json t = {{"accuracy", per_task[task].sum / double(per_task[task].count)}, {"cells", json::array()}};
    Heatmap map;
    map.title = title + ": " + retrieval_task_name(task);
    map.x_label = "context length (tokens)";
    map.y_label = "needle depth (% of the context)";
    map.scale_label = "accuracy";
    for (int64_t l : lengths) map.column_labels.push_back(std::to_string(l));
    for (int d : depths) map.row_labels.push_back(depth_label(d));
    map.values.assign(depths.size(), std::vector<double>(lengths.size(), 0.0));
    for (const auto& [where, cell] : by_cell) {
      const double acc = cell.sum / double(cell.count);
      csv << retrieval_task_name(task) << "," << where.first << "," << where.second << "," << acc << ","
          << cell.count << "\n";
      t["cells"].push_back({{"length", where.first}, {"depth", where.second}, {"accuracy", acc},
                            {"samples", cell.count}});
      const size_t row = size_t(std::find(depths.begin(), depths.end(), where.second) - depths.begin());
      const size_t col = size_t(std::find(lengths.begin(), lengths.end(), where.first) - lengths.begin());
      map.values[row][col] = acc;
    }
    summary["tasks"][retrieval_task_name(task)] = t;
    write_heatmap_png(out_dir + "/niah_" + retrieval_task_name(task) + ".png", map);
  }
  write_file_atomic(out_dir + "/summary.csv", csv.str());
  write_file_atomic(out_dir + "/summary.json", summary.dump(2) + "\n");
}

void write_niah_prompts(const std::string& out_dir, const std::vector<NiahSample>& samples, const NiahCodec& codec) {
  std::filesystem::create_directories(out_dir);
  std::string jsonl;
  for (const NiahSample& s : samples) {
    json needles = json::array();
    for (const NiahNeedle& n : s.needles)
      needles.push_back({{"key", n.key}, {"value", n.value}, {"position", n.position}, {"tokens", n.tokens}});
    jsonl += json{{"task", retrieval_task_name(s.task)},
                  {"length", s.length},
                  {"depth", s.depth},
                  {"index", s.index},
                  {"ids", s.ids},
                  {"text", codec.decode(s.ids)},
                  {"needles", needles},
                  {"keys", s.asked_keys},
                  {"expected", s.expected},
                  {"max_answer_tokens", s.max_answer_tokens}}
                 .dump() +
             "\n";
  }
  write_file_atomic(out_dir + "/prompts.jsonl", jsonl);
}

}  // namespace memoe
