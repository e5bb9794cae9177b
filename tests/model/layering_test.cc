// model/ only sequences kernel calls: no OpenMP, SIMD or BLAS there, so a
// second backend touches src/kernels alone (DEVELOPERS.md, "What a backend
// provides"). And nothing lower includes anything higher.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace memoe {
namespace {

namespace fs = std::filesystem;

std::vector<std::pair<std::string, std::string>> sources(const std::string& folder) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& e : fs::directory_iterator(fs::path(MEMOE_SOURCE_DIR) / "src" / folder)) {
    std::ifstream in(e.path());
    std::stringstream ss;
    ss << in.rdbuf();
    out.emplace_back(e.path().filename().string(), ss.str());
  }
  return out;
}

TEST(Layering, ModelHasNoThreadingSimdOrBlas) {
  const auto files = sources("model");
  ASSERT_GT(files.size(), 10u);
  for (const auto& [name, text] : files)
    for (const char* word : {"#pragma omp", "cblas", "immintrin", "__m512", "omp.h"})
      EXPECT_EQ(text.find(word), std::string::npos) << "src/model/" << name << " contains " << word;
}

TEST(Layering, LowerFoldersDoNotIncludeHigherOnes) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> rules = {
      {"core", {"kernels/", "io/", "model/", "parallel/", "train/", "eval/", "serve/", "cli/"}},
      {"kernels", {"io/", "model/", "parallel/", "train/", "eval/", "serve/", "cli/"}},
      {"io", {"model/", "parallel/", "train/", "eval/", "serve/", "cli/"}},
      {"model", {"parallel/", "train/", "eval/", "serve/", "cli/"}},
      {"parallel", {"train/", "eval/", "serve/", "cli/"}},
      {"train", {"eval/", "serve/", "cli/"}},
  };
  for (const auto& [folder, forbidden] : rules)
    for (const auto& [name, text] : sources(folder))
      for (const auto& higher : forbidden)
        EXPECT_EQ(text.find("#include \"" + higher), std::string::npos)
            << "src/" << folder << "/" << name << " includes " << higher;
}

// Ranks are parallel/'s business: MPI appears nowhere else.
TEST(Layering, OnlyParallelKnowsMpi) {
  for (const char* folder : {"core", "kernels", "io", "model", "train", "eval", "serve", "cli"})
    for (const auto& [name, text] : sources(folder))
      EXPECT_EQ(text.find("mpi.h"), std::string::npos) << "src/" << folder << "/" << name << " includes mpi.h";
}

// One memory-mapping helper (io/mapped_file.h) for every file memoe maps.
TEST(Layering, OnlyMappedFileMapsFiles) {
  for (const char* folder : {"core", "kernels", "io", "model", "parallel", "train", "eval", "serve", "cli"})
    for (const auto& [name, text] : sources(folder))
      if (std::string(folder) + "/" + name != "io/mapped_file.cc") {
        EXPECT_EQ(text.find("::mmap("), std::string::npos) << "src/" << folder << "/" << name << " maps a file itself";
      }
  EXPECT_FALSE(fs::exists(fs::path(MEMOE_SOURCE_DIR) / "src" / "dist")) << "src/dist is src/parallel";
}

}  // namespace
}  // namespace memoe
