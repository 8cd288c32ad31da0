#pragma once
// safetensors reading and writing, without LibTorch (so the parser can be fuzzed on its own).
//
// Format: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data buffer.
// The JSON maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
// to the buffer) plus an optional "__metadata__" string->string map. Validation follows the
// format's reference implementation; every rejection names the file, the tensor and the rule.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace loopy::safetensors {

enum class DType { BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64 };

std::optional<DType> parse_dtype(std::string_view name);
std::string_view dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);

struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    uint64_t begin = 0;  // byte offsets relative to the start of the data buffer
    uint64_t end = 0;
    uint64_t nbytes() const { return end - begin; }
};

struct Header {
    std::map<std::string, std::string> metadata;
    std::vector<TensorInfo> tensors;  // sorted by data offset
    uint64_t data_start = 0;          // absolute file offset of the data buffer (8 + N)
    const TensorInfo* find(std::string_view name) const;
};

constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Parses and validates a complete safetensors image of `size` bytes. Throws loopy::Error whose
// message starts with `source` (usually the file name).
Header parse(const uint8_t* data, std::size_t size, const std::string& source);

// A read-only view of a whole file, memory-mapped copy-on-write: tensors that alias it may be
// modified in memory without touching the file.
class MappedFile {
  public:
    static std::shared_ptr<MappedFile> open(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    uint8_t* data() const { return data_; }
    std::size_t size() const { return size_; }
    const std::string& path() const { return path_; }

  private:
    MappedFile() = default;
    uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
    std::string path_;
};

// A parsed file: the mapping stays alive as long as this object (and anything sharing it).
struct File {
    std::shared_ptr<MappedFile> mapping;
    Header header;

    static File open(const std::string& path);
    uint8_t* tensor_data(const TensorInfo& info) const {
        return mapping->data() + header.data_start + info.begin;
    }
};

struct TensorView {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    const void* data = nullptr;
    std::size_t nbytes = 0;
};

// Writes to a temporary file in the target folder, fsyncs and renames it over `path`: a failure
// leaves no partial file behind. Tensors are stored in name order.
void write(const std::string& path, const std::vector<TensorView>& tensors,
           const std::map<std::string, std::string>& metadata = {});

// The serialised bytes (header and buffer) of what write() would store.
std::vector<uint8_t> serialize(const std::vector<TensorView>& tensors,
                               const std::map<std::string, std::string>& metadata = {});

}  // namespace loopy::safetensors
