#pragma once
// Writes go to a temporary file beside the target; commit() fsyncs and renames it into place.
// Destroyed without commit() (an error, a cancel), the temporary file is removed: the target is
// either the old file or the complete new one, never half-written.
#include <cstddef>
#include <string>

namespace loopy {

class AtomicFile {
  public:
    // Refuses to replace an existing file unless `overwrite` is set.
    explicit AtomicFile(std::string path, bool overwrite = true);
    ~AtomicFile();
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(const void* data, std::size_t size);
    void commit();
    const std::string& temp_path() const { return temp_path_; }

  private:
    std::string path_;
    std::string temp_path_;
    int fd_ = -1;
    bool committed_ = false;
};

void write_file_atomically(const std::string& path, const void* data, std::size_t size);

}  // namespace loopy
