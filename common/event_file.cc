#include "common/event_file.h"

#include <unistd.h>

#include <glog/logging.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/errors.h"

namespace tempered {

namespace {

// The byte-at-a-time table of the reflected Castagnoli polynomial (Debian has no crc32c library for C++).
constexpr std::array<uint32_t, 256> MakeCrc32cTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (c & 1 ? 0x82f63b78u : 0);
    table[i] = c;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kCrc32cTable = MakeCrc32cTable();

// TFRecord stores the length and the CRCs little-endian, whatever the host's byte order.
void AppendLittleEndian(uint64_t value, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>(value >> (8 * i)));
}

uint64_t ReadLittleEndian(const char* p, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return value;
}

double WallTime() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string DefaultFileName(int64_t unix_seconds) {
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  return "events.out.tfevents." + std::to_string(unix_seconds) + "." + host;
}

}  // namespace

uint32_t Crc32c(const void* data, size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < size; ++i) crc = kCrc32cTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

uint32_t MaskCrc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

EventWriter::EventWriter(const std::string& dir, const std::string& file_name) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw UserError("cannot create the event directory " + dir + ": " + error.message());
  if (!file_name.empty()) {
    path_ = dir + "/" + file_name;
    file_ = std::fopen(path_.c_str(), "wb");
  } else {
    // A run resumed within the second its last attempt stopped in would get that attempt's name: an event file is
    // never overwritten (its curves are the earlier steps' only record); the name of a later second is taken
    // instead, which also keeps TensorBoard's file order.
    int64_t seconds = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
    for (int tries = 0; file_ == nullptr && tries < 1000; ++tries, ++seconds) {
      path_ = dir + "/" + DefaultFileName(seconds);
      file_ = std::fopen(path_.c_str(), "wbx");  // exclusive: fails with EEXIST rather than truncate
      if (file_ == nullptr && errno != EEXIST) break;
    }
  }
  if (file_ == nullptr) ThrowWriteError("cannot create");
  tensorboard::Event event;
  event.set_wall_time(WallTime());
  event.set_file_version("brain.Event:2");
  try {
    Write(event);
    Flush();
  } catch (const UserError&) {
    std::fclose(file_);  // the destructor does not run for a throwing constructor
    throw;
  }
}

EventWriter::~EventWriter() {
  if (file_ == nullptr) return;
  if (std::fflush(file_) != 0 || std::fclose(file_) != 0) {
    LOG(ERROR) << "cannot write the event file " << path_ << ": " << std::strerror(errno);
  }
}

void EventWriter::AddScalar(const std::string& tag, int64_t step, double value) {
  tensorboard::Event event;
  event.set_wall_time(WallTime());
  event.set_step(step);
  tensorboard::Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));  // TensorBoard's scalars are float
  Write(event);
}

void EventWriter::AddValue(int64_t step, const tensorboard::Summary::Value& value) {
  tensorboard::Event event;
  event.set_wall_time(WallTime());
  event.set_step(step);
  *event.mutable_summary()->add_value() = value;
  Write(event);
}

void EventWriter::Flush() {
  if (std::fflush(file_) != 0) ThrowWriteError("cannot write");
}

void EventWriter::Write(const tensorboard::Event& event) {
  const std::string payload = event.SerializeAsString();
  std::string record;
  AppendLittleEndian(payload.size(), 8, &record);
  AppendLittleEndian(MaskCrc(Crc32c(record.data(), 8)), 4, &record);
  record += payload;
  AppendLittleEndian(MaskCrc(Crc32c(payload.data(), payload.size())), 4, &record);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size()) ThrowWriteError("cannot write");
}

void EventWriter::ThrowWriteError(const std::string& what) {
  throw UserError(what + " the event file " + path_ + ": " + std::strerror(errno));
}

std::vector<tensorboard::Event> ReadEventFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("cannot open the event file " + path);
  std::ostringstream contents;
  contents << in.rdbuf();
  const std::string data = contents.str();
  std::vector<tensorboard::Event> events;
  for (size_t offset = 0; offset < data.size();) {
    const auto corrupt = [&](const std::string& why) {
      return UserError("event file " + path + ": the record at byte " + std::to_string(offset) + " " + why);
    };
    if (data.size() - offset < 12) throw corrupt("is truncated (no complete header)");
    const char* header = data.data() + offset;
    const uint64_t length = ReadLittleEndian(header, 8);
    if (MaskCrc(Crc32c(header, 8)) != ReadLittleEndian(header + 8, 4)) throw corrupt("has a bad length CRC");
    const size_t available = data.size() - offset - 12;  // for the payload and its CRC
    if (available < 4 || length > available - 4) throw corrupt("is truncated (payload or its CRC)");
    const char* payload = header + 12;
    if (MaskCrc(Crc32c(payload, length)) != ReadLittleEndian(payload + length, 4)) {
      throw corrupt("has a bad payload CRC");
    }
    events.emplace_back();
    if (!events.back().ParseFromArray(payload, static_cast<int>(length))) throw corrupt("is not an Event");
    offset += 12 + length + 4;
  }
  return events;
}

}  // namespace tempered
