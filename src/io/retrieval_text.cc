#include "io/retrieval_text.h"

#include <algorithm>
#include <array>

#include "core/error.h"

namespace memoe {

namespace {

constexpr std::array<const char*, 40> kAdjectives = {
    "silent", "golden", "hidden", "ancient", "bright", "frozen", "hollow", "quiet",  "rapid",  "rusty",
    "scarlet", "shallow", "sleepy", "smoky", "steady", "stormy", "sunny",  "tender", "tiny",   "velvet",
    "wild",   "wooden", "young",  "amber",  "bitter", "brave",  "calm",   "clever", "copper", "crimson",
    "dusty",  "eager",  "faint",  "gentle", "grand",  "humble", "icy",    "lively", "lucky",  "misty"};
constexpr std::array<const char*, 40> kNouns = {
    "harbor", "meadow", "lantern", "river",  "falcon", "garden", "mirror", "canyon", "forest", "island",
    "anchor", "bridge", "castle", "desert", "engine", "feather", "glacier", "hammer", "jungle", "kettle",
    "ladder", "marble", "needle", "orchard", "pepper", "quarry", "ribbon", "saddle", "temple", "tunnel",
    "valley", "wagon",  "window", "beacon", "candle", "dragon", "ember",  "fountain", "grove", "helmet"};

// FNV-1a over the text: which space a key or value is in.
uint64_t text_hash(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h ^ (h >> 29);
}
KeySpace space_of(const std::string& s) { return (text_hash(s) & 1) ? KeySpace::training : KeySpace::evaluation; }

std::string key_of(size_t adjective, size_t noun) {
  return std::string(kAdjectives[adjective]) + "-" + kNouns[noun];
}

std::string draw_key(Rng& rng, KeySpace space) {
  for (;;) {
    std::string k = key_of(rng.below(kAdjectives.size()), rng.below(kNouns.size()));
    if (space_of(k) == space) return k;
  }
}

// A key sharing one word with `key` (same adjective or same noun), in the
// same space; a random key of the space if the draws do not find one.
std::string near_miss_key(Rng& rng, const std::string& key, KeySpace space) {
  const size_t dash = key.find('-');
  const std::string adjective = key.substr(0, dash), noun = key.substr(dash + 1);
  for (int attempt = 0; attempt < 64; ++attempt) {
    const bool keep_adjective = rng.below(2) == 0;
    const std::string k = keep_adjective ? adjective + "-" + kNouns[rng.below(kNouns.size())]
                                         : std::string(kAdjectives[rng.below(kAdjectives.size())]) + "-" + noun;
    if (k != key && space_of(k) == space) return k;
  }
  return draw_key(rng, space);
}

std::string draw_value(Rng& rng, KeySpace space) {
  for (;;) {
    std::string v = std::to_string(1000000 + rng.below(9000000));
    if (space_of(v) == space) return v;
  }
}

}  // namespace

const char* retrieval_task_name(RetrievalTask task) {
  switch (task) {
    case RetrievalTask::single: return "single";
    case RetrievalTask::multikey: return "multikey";
    case RetrievalTask::multivalue: return "multivalue";
    case RetrievalTask::multiquery: return "multiquery";
  }
  return "?";
}

std::vector<RetrievalTask> all_retrieval_tasks() {
  return {RetrievalTask::single, RetrievalTask::multikey, RetrievalTask::multivalue, RetrievalTask::multiquery};
}

RetrievalTask parse_retrieval_task(const std::string& name) {
  for (RetrievalTask t : all_retrieval_tasks())
    if (name == retrieval_task_name(t)) return t;
  fail("unknown retrieval task '", name, "' (expected single, multikey, multivalue or multiquery)");
}

KeySpace key_space(const std::string& key) { return space_of(key); }
KeySpace value_space(const std::string& value) { return space_of(value); }

RetrievalItem draw_retrieval_item(Rng& rng, RetrievalTask task, KeySpace space, const RetrievalCounts& counts) {
  // Each space holds about 800 keys; a few dozen needles is already far
  // more than a retrieval prompt holds.
  for (const auto& [what, n] : {std::pair{"distractors", counts.distractors}, std::pair{"values", counts.values},
                                std::pair{"queries", counts.queries}})
    MEMOE_CHECK(n >= 0 && n <= 64, "retrieval: ", what, " must be in 0..64, got ", n);
  RetrievalItem item;
  item.task = task;
  std::vector<std::string> keys, values;
  auto fresh_value = [&] {
    for (;;) {
      std::string v = draw_value(rng, space);
      if (std::find(values.begin(), values.end(), v) == values.end()) return values.push_back(v), v;
    }
  };
  auto fresh_key = [&](bool near_miss) {
    for (;;) {
      std::string k = near_miss && !keys.empty() ? near_miss_key(rng, keys.front(), space) : draw_key(rng, space);
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) return keys.push_back(k), k;
    }
  };
  const std::string key = fresh_key(false);
  switch (task) {
    case RetrievalTask::single:
      item.needles.push_back({key, fresh_value()});
      break;
    case RetrievalTask::multikey:
      item.needles.push_back({key, fresh_value()});
      for (int d = 0; d < counts.distractors; ++d)
        item.needles.push_back({fresh_key(d < (counts.distractors + 1) / 2), fresh_value()});
      break;
    case RetrievalTask::multivalue:
      for (int v = 0; v < std::max(1, counts.values); ++v) item.needles.push_back({key, fresh_value()});
      break;
    case RetrievalTask::multiquery:
      item.needles.push_back({key, fresh_value()});
      for (int q = 1; q < std::max(1, counts.queries); ++q) item.needles.push_back({fresh_key(false), fresh_value()});
      break;
  }
  if (task == RetrievalTask::multiquery) {
    for (const auto& [k, v] : item.needles) item.asked_keys.push_back(k), item.expected_values.push_back(v);
  } else {
    item.asked_keys.push_back(key);
    for (const auto& [k, v] : item.needles)
      if (k == key) item.expected_values.push_back(v);
  }
  return item;
}

std::string needle_text(const std::string& key, const std::string& value) {
  return " One of the special magic numbers for " + key + " is: " + value + ". ";
}

namespace {
// "a", "a and b", "a, b and c".
std::string listed(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += i + 1 == items.size() ? " and " : ", ";
    out += items[i];
  }
  return out;
}
}  // namespace

std::string question_text(const RetrievalItem& item) {
  const std::string keys = listed(item.asked_keys);
  if (item.expected_values.size() == 1)
    return "\nWhat is the special magic number for " + keys + " mentioned in the provided text? The special magic "
           "number for " + keys + " mentioned in the provided text is";
  return "\nWhat are all the special magic numbers for " + keys + " mentioned in the provided text? The special "
         "magic numbers for " + keys + " mentioned in the provided text are";
}

std::string answer_text(const RetrievalItem& item) {
  std::string out(" ");  // appended, not " " + ...: GCC 12 warns falsely (-Wrestrict) on that
  out += listed(item.expected_values);
  out += '.';
  return out;
}

std::vector<int64_t> append_with_needles(std::vector<int32_t>& out, const int32_t* haystack, int64_t count,
                                         const std::vector<std::vector<int32_t>>& needles,
                                         const std::vector<int64_t>& at) {
  MEMOE_CHECK(needles.size() == at.size(), "append_with_needles: ", at.size(), " places for ", needles.size(),
              " needles");
  std::vector<size_t> order(at.size());
  for (size_t n = 0; n < order.size(); ++n) {
    MEMOE_CHECK(at[n] >= 0 && at[n] <= count, "append_with_needles: place ", at[n], " is outside 0..", count);
    order[n] = n;
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return at[a] < at[b]; });
  std::vector<int64_t> where(at.size());
  int64_t taken = 0;
  for (size_t n : order) {
    out.insert(out.end(), haystack + taken, haystack + at[n]);
    taken = at[n];
    where[n] = int64_t(out.size());
    out.insert(out.end(), needles[n].begin(), needles[n].end());
  }
  out.insert(out.end(), haystack + taken, haystack + count);
  return where;
}

}  // namespace memoe
