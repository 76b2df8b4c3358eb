// Config flows one way: text proto (+ flag overrides) -> ResolveConfig (defaults) -> ValidateConfig -> code.
#pragma once

#include <google/protobuf/message.h>

#include <string>

#include "proto/tempered.pb.h"

namespace tempered {

// The defaults a newcomer gets: Fashion-MNIST, the small CNN, InfoNCE at tau = 0.2 over global batch negatives.
RunConfig DefaultRunConfig();

// Fills every unset (zero / empty / *_UNSPECIFIED) field of `config` from DefaultRunConfig(). The result is the
// fully resolved config that is logged, saved with results and hashed by tempered-sweep.
RunConfig ResolveConfig(const RunConfig& config);

// Throws UserError with one sentence naming the first invalid field (e.g. "loss.tau must be > 0, got -1").
void ValidateConfig(const RunConfig& config);

// Reads a text-format RunConfig; throws UserError naming the file and the line of a parse error or unknown field.
RunConfig ReadRunConfig(const std::string& path);

// Sets the (possibly nested) field `path` ("loss.tau", "model.norm", "optim.decay_epochs") of `message` from its
// text form. Enum values are case-insensitive ("batch" or "BATCH"); a repeated field takes a comma-separated list.
// Throws UserError naming the path and the value when either is invalid.
void SetFieldByPath(google::protobuf::Message* message, const std::string& path, const std::string& value);

// Reads a text-format message of any type from `path` (UserError on failure, naming the file and line).
void ReadTextProto(const std::string& path, google::protobuf::Message* message);

// Writes `contents` to `path` atomically: a temp file in the same directory, fsync, rename. UserError on failure.
void WriteFileAtomically(const std::string& path, const std::string& contents);

// protobuf JSON mapping with proto field names preserved (snake_case) and zero values printed.
std::string ToJson(const google::protobuf::Message& message);
// Parses JSON written by ToJson (unknown fields ignored); UserError naming `what` on failure.
void FromJson(const std::string& json, google::protobuf::Message* message, const std::string& what);

}  // namespace tempered
