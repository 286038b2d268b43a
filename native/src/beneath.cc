// Path calls relative to a held directory fd, so a path checked once cannot be swapped for a
// symlink (or its directory for another) between the check and the use. Opens resolve with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) when the kernel has it (Linux 5.6+, probed once
// at load), else by walking one component at a time with openat(O_NOFOLLOW | O_DIRECTORY) fds.
// native/beneath.ts validates every argument (relative, no "..", no empty or over-long
// component); these are quick metadata calls and stay synchronous.
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "napi_util.h"

namespace dwcp {
namespace {

// Whether openat2 exists (ENOSYS on kernels before 5.6, or under a seccomp filter that refuses it).
bool probe_openat2() {
#ifdef SYS_openat2
  open_how how{};
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS;
  const long fd = syscall(SYS_openat2, AT_FDCWD, ".", &how, sizeof how);
  if (fd >= 0) {
    close(static_cast<int>(fd));
    return true;
  }
  return errno != ENOSYS && errno != EPERM;
#else
  return false;
#endif
}

const bool kHaveOpenat2 = probe_openat2();

// With O_DIRECTORY the kernel answers ENOTDIR, not ELOOP, for a symlink: say which it was.
int retry_open(int dirfd, const char* name, int flags, mode_t mode) {
  int fd;
  do fd = openat(dirfd, name, flags | O_CLOEXEC | O_NOFOLLOW, mode);
  while (fd < 0 && errno == EINTR);
  if (fd < 0 && errno == ENOTDIR) {
    struct stat st {};
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) errno = ELOOP;
    else errno = ENOTDIR;
  }
  return fd;
}

// The walk: every directory component opened with O_NOFOLLOW | O_DIRECTORY from the fd of the one
// before, so a symlink anywhere fails with ELOOP and nothing is resolved by path twice.
int open_walk(int dirfd, const std::string& path, int flags, mode_t mode) {
  int cur = dirfd;
  size_t start = 0;
  for (;;) {
    const size_t slash = path.find('/', start);
    if (slash == std::string::npos) break;
    const std::string part = path.substr(start, slash - start);
    const int next = retry_open(cur, part.c_str(), O_RDONLY | O_DIRECTORY, 0);
    const int saved = errno;
    if (cur != dirfd) close(cur);
    if (next < 0) {
      errno = saved;
      return -1;
    }
    cur = next;
    start = slash + 1;
  }
  const int fd = retry_open(cur, path.c_str() + start, flags, mode);
  const int saved = errno;
  if (cur != dirfd) close(cur);
  errno = saved;
  return fd;
}

int open_beneath(int dirfd, const std::string& path, int flags, mode_t mode, bool walk) {
#ifdef SYS_openat2
  if (kHaveOpenat2 && !walk) {
    open_how how{};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC | O_NOFOLLOW);
    how.mode = (flags & (O_CREAT | O_TMPFILE)) != 0 ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS;
    long fd;
    do fd = syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how);
    while (fd < 0 && (errno == EINTR || errno == EAGAIN));
    if (fd < 0 && errno == ENOTDIR) {
      // A symlink where a directory was expected also reads ENOTDIR: the walk tells them apart.
      // Whatever it finds, this open has failed, so the walk creates and truncates nothing.
      const int again = open_walk(dirfd, path, flags & ~(O_CREAT | O_EXCL | O_TRUNC), 0);
      if (again >= 0) close(again);
      errno = again < 0 && errno == ELOOP ? ELOOP : ENOTDIR;
    }
    return static_cast<int>(fd);
  }
#endif
  return open_walk(dirfd, path, flags, mode);
}

// openBeneath(dirfd, path, flags, mode, walk) -> fd. `walk` forces the openat walk (tests).
Napi::Value OpenBeneath(const Napi::CallbackInfo& info) {
  const std::string path = info[1].As<Napi::String>().Utf8Value();
  const bool walk = info[4].As<Napi::Boolean>().Value();
  const int fd = open_beneath(i32(info[0]), path, i32(info[2]), static_cast<mode_t>(u32(info[3])), walk);
  if (fd < 0) throw errno_error(info.Env(), errno, walk || !kHaveOpenat2 ? "openat" : "openat2");
  return Napi::Number::New(info.Env(), fd);
}

// mkdirAt(dirfd, name, mode) -> true if created, false if it already existed (of whatever kind).
Napi::Value MkdirAt(const Napi::CallbackInfo& info) {
  const std::string name = info[1].As<Napi::String>().Utf8Value();
  if (mkdirat(i32(info[0]), name.c_str(), static_cast<mode_t>(u32(info[2]))) == 0)
    return Napi::Boolean::New(info.Env(), true);
  if (errno == EEXIST) return Napi::Boolean::New(info.Env(), false);
  throw errno_error(info.Env(), errno, "mkdirat");
}

// renameAt(fromDirfd, from, toDirfd, to, noReplace): renameat2(RENAME_NOREPLACE) when asked.
Napi::Value RenameAt(const Napi::CallbackInfo& info) {
  const std::string from = info[1].As<Napi::String>().Utf8Value();
  const std::string to = info[3].As<Napi::String>().Utf8Value();
  const bool no_replace = info[4].As<Napi::Boolean>().Value();
  const int r = no_replace ? renameat2(i32(info[0]), from.c_str(), i32(info[2]), to.c_str(), RENAME_NOREPLACE)
                           : renameat(i32(info[0]), from.c_str(), i32(info[2]), to.c_str());
  if (r != 0) throw errno_error(info.Env(), errno, no_replace ? "renameat2" : "renameat");
  return info.Env().Undefined();
}

// unlinkAt(dirfd, name, isDir).
Napi::Value UnlinkAt(const Napi::CallbackInfo& info) {
  const std::string name = info[1].As<Napi::String>().Utf8Value();
  const bool dir = info[2].As<Napi::Boolean>().Value();
  if (unlinkat(i32(info[0]), name.c_str(), dir ? AT_REMOVEDIR : 0) != 0)
    throw errno_error(info.Env(), errno, "unlinkat");
  return info.Env().Undefined();
}

const char* kind_of(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "directory";
  if (S_ISLNK(m)) return "symlink";
  return "other";
}

// statAt(dirfd, name) -> {kind, size, ino} of the entry itself (a symlink is not followed), or
// undefined when there is none (ENOENT).
Napi::Value StatAt(const Napi::CallbackInfo& info) {
  const std::string name = info[1].As<Napi::String>().Utf8Value();
  struct stat st {};
  if (fstatat(i32(info[0]), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return info.Env().Undefined();
    throw errno_error(info.Env(), errno, "fstatat");
  }
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("kind", kind_of(st.st_mode));
  o.Set("size", Napi::Number::New(info.Env(), static_cast<double>(st.st_size)));
  o.Set("ino", Napi::Number::New(info.Env(), static_cast<double>(st.st_ino)));
  return o;
}

}  // namespace

void init_beneath(Napi::Env env, Napi::Object exports) {
  exports.Set("openBeneath", Napi::Function::New(env, OpenBeneath, "openBeneath"));
  exports.Set("mkdirAt", Napi::Function::New(env, MkdirAt, "mkdirAt"));
  exports.Set("renameAt", Napi::Function::New(env, RenameAt, "renameAt"));
  exports.Set("unlinkAt", Napi::Function::New(env, UnlinkAt, "unlinkAt"));
  exports.Set("statAt", Napi::Function::New(env, StatAt, "statAt"));
  exports.Set("openat2", Napi::Boolean::New(env, kHaveOpenat2));
}

}  // namespace dwcp
