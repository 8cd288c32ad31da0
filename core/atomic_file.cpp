#include "core/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace loopy {
namespace fs = std::filesystem;

AtomicFile::AtomicFile(std::string path, bool overwrite) : path_(std::move(path)) {
    if (!overwrite && fs::exists(path_))
        throw Error(path_ + ": already exists (use --force to overwrite)");
    const fs::path target(path_);
    const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    std::string pattern = (dir / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
    fd_ = ::mkstemp(pattern.data());
    if (fd_ < 0)
        throw Error(path_ + ": cannot create a temporary file in " + dir.string() + " (" +
                    std::strerror(errno) + ")");
    ::fchmod(fd_, 0644);
    temp_path_ = pattern;
}

AtomicFile::~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void AtomicFile::write(const void* data, std::size_t size) {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(fd_, p, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw Error(path_ + ": write failed (" + std::strerror(errno) + ")");
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
}

void AtomicFile::commit() {
    if (::fsync(fd_) != 0) throw Error(path_ + ": fsync failed (" + std::strerror(errno) + ")");
    if (::close(fd_) != 0) {
        fd_ = -1;
        throw Error(path_ + ": close failed (" + std::strerror(errno) + ")");
    }
    fd_ = -1;
    if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
        throw Error(path_ + ": rename failed (" + std::strerror(errno) + ")");
    committed_ = true;
}

void write_file_atomically(const std::string& path, const void* data, std::size_t size) {
    AtomicFile file(path);
    file.write(data, size);
    file.commit();
}

}  // namespace loopy
