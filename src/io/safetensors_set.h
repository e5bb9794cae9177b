// The tensors of one kind in a checkpoint directory (the model's weights, the
// optimizer's moments) under one name, stored either as one file,
// STEM.safetensors, or in Hugging Face's sharded form: STEM-0000k-of-0000n
// .safetensors plus STEM.safetensors.index.json, whose "weight_map" names
// each tensor's file. Readers see one set of tensors either way.
//
// A tensor may also be stored in pieces: flat element ranges of it, each a
// 1-D tensor named NAME[begin:end] (an optimizer's moments sharded over
// data-parallel ranks). read_range() reads any range of a tensor whether it
// was stored whole or in pieces, so any layout reads any other's files.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace memoe {

class SafetensorsSet {
 public:
  // DIR/STEM.safetensors.index.json when present, else DIR/STEM.safetensors.
  // Every shard the index names is opened and checked to hold its tensors.
  static SafetensorsSet open(const std::string& dir, const std::string& stem);

  // What messages name: the single file or the index.
  const std::string& path() const { return path_; }
  bool sharded() const { return files_.size() > 1 || index_; }
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  std::vector<std::string> names() const;  // sorted
  const TensorInfo& info(const std::string& name) const { return file_of(name).info(name); }
  // The single file's metadata, or the index's "metadata" (values as text).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The file holding `name` (an error naming the set when it has none).
  const SafetensorsFile& file_of(const std::string& name) const;

  void read_f32_into(const std::string& name, float* out, int64_t count) const {
    file_of(name).read_f32_into(name, out, count);
  }
  Tensor view(const std::string& name) const { return file_of(name).view(name); }
  bool viewable(const std::string& name) const { return has(name) && file_of(name).viewable(name); }
  std::vector<int64_t> read_i64(const std::string& name) const { return file_of(name).read_i64(name); }
  std::span<const uint8_t> raw_bytes(const std::string& name) const { return file_of(name).raw_bytes(name); }

  // Elements [begin, end) of tensor `name` (numel elements in all) as fp32,
  // from the whole tensor or from pieces that together cover the range; a
  // gap or an overlap inside the range, or a piece outside the tensor, is an
  // error naming it.
  void read_range(const std::string& name, int64_t numel, int64_t begin, int64_t end, float* out) const;

 private:
  // Elements [begin, end) of one stored tensor.
  void read_part(const std::string& stored, int64_t begin, int64_t end, float* out) const;

  std::string path_;
  bool index_ = false;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;  // tensor name -> files_ index
  std::map<std::string, std::string> metadata_;
};

// The stored name of elements [begin, end) of a tensor of numel elements:
// the name itself for the whole tensor, else NAME[begin:end].
std::string piece_name(const std::string& name, int64_t begin, int64_t end, int64_t numel);

// "STEM-0000k-of-0000n.safetensors" (k counted from 1) and the index's name.
std::string shard_file_name(const std::string& stem, int k, int n);
std::string index_file_name(const std::string& stem);

// Writes DIR/STEM.safetensors.index.json (atomically) for the n shard files
// already in DIR, read back to list their tensors: each tensor must be in
// exactly one. `metadata` goes into the index's "metadata" beside
// total_size (the shards' data bytes).
void write_safetensors_index(const std::string& dir, const std::string& stem, int n,
                             const std::map<std::string, std::string>& metadata);

}  // namespace memoe
