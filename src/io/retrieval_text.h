// The text of RULER-style needle-in-a-haystack retrieval, declared once for
// the evaluation (eval/niah) and for the training documents that teach the
// skill (memoe prepare --retrieval-mix): the needle sentence, the question
// and answer of each task family, and the keys and values.
//
// Keys ("adjective-noun") and values (7-digit numbers) fall into two
// disjoint spaces, decided by a hash of their text: the evaluation draws
// only from one and training documents only from the other, so a model that
// scores has retrieved the value from its context, not remembered it; and
// either side can check any key or value (key_space, value_space).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"

namespace memoe {

enum class RetrievalTask {
  single,      // one needle; its value asked for
  multikey,    // the needle among distractor needles with other keys, near misses included
  multivalue,  // several needles with one key; all its values asked for
  multiquery,  // several needles with different keys; all asked at once
};
const char* retrieval_task_name(RetrievalTask task);
// One line for an unknown name, listing the known ones.
RetrievalTask parse_retrieval_task(const std::string& name);
std::vector<RetrievalTask> all_retrieval_tasks();

enum class KeySpace { evaluation, training };
KeySpace key_space(const std::string& key);
KeySpace value_space(const std::string& value);

// One retrieval question: the needles to hide (in the order given), the
// keys asked about and the values a correct answer holds.
struct RetrievalItem {
  RetrievalTask task = RetrievalTask::single;
  std::vector<std::pair<std::string, std::string>> needles;  // (key, value); needles[0] is the one at the depth
  std::vector<std::string> asked_keys;
  std::vector<std::string> expected_values;
};

struct RetrievalCounts {
  int distractors = 3;  // multikey: other needles, near misses first
  int values = 3;       // multivalue
  int queries = 3;      // multiquery
};

// Draws an item of `task` with keys and values from `space` only; all keys
// of distinct needles differ, all values differ.
RetrievalItem draw_retrieval_item(Rng& rng, RetrievalTask task, KeySpace space, const RetrievalCounts& counts = {});

// "One of the special magic numbers for KEY is: VALUE. " (with a leading
// space, so it reads as its own sentence wherever it is put).
std::string needle_text(const std::string& key, const std::string& value);
// The question after the context, ending where the answer starts.
std::string question_text(const RetrievalItem& item);
// The answer that follows the question in a training document: " V." or
// " V1, V2 and V3."
std::string answer_text(const RetrievalItem& item);

// Appends to `out` the `count` haystack tokens with needles[n] inserted
// before haystack token at[n] (0..count; ties keep the needles' order), and
// returns the index in `out` where each needle starts.
std::vector<int64_t> append_with_needles(std::vector<int32_t>& out, const int32_t* haystack, int64_t count,
                                         const std::vector<std::vector<int32_t>>& needles,
                                         const std::vector<int64_t>& at);

}  // namespace memoe
