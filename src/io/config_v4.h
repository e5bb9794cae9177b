// DeepSeek-V4's config as released, in its two spellings: Hugging Face's
// config.json (model_type "deepseek_v4") and DeepSeek's inference/config.json
// (the ModelArgs names of inference/model.py). Internal to io/: config.cc
// dispatches here.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "io/config.h"

namespace memoe::config_detail {

// True for either V4 spelling. A V4.1 file (model_type "deepseek_v41") is
// refused here in one line: it is a different model.
bool is_v4_json(const nlohmann::json& j, const std::string& origin);

// Parses and validates either spelling into one ModelConfig. A check that
// fails names the key as the file spells it.
ModelConfig parse_v4(const nlohmann::json& j, const std::string& origin);

// The V4-only checks (validate_config calls it for V4 configs).
void validate_v4(const ModelConfig& c);

// The Hugging Face spelling of a V4 config.
nlohmann::json v4_to_json(const ModelConfig& c);

// An overestimate of one V4 layer's attention parameters (compressors and
// indexer included), for the parameter bound.
double v4_attention_bound(const ModelConfig& c);

}  // namespace memoe::config_detail
