// Config flows one way: text proto (+ flag overrides) -> ResolveConfig (defaults) -> ValidateConfig -> code.
#pragma once

#include <google/protobuf/message.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/files.h"  // WriteFileAtomically and ReadWholeFile, which the config readers and writers use
#include "proto/tempered.pb.h"

namespace tempered {

// Whether a loss's formula involves tau (docs/paper.md §2): infonce and hard. The others ignore loss.tau and
// loss.tau_mode.
bool LossUsesTau(LossConfig::Name name);

// The defaults a newcomer gets: Fashion-MNIST, the small CNN, InfoNCE at tau = 0.2 over global batch negatives.
RunConfig DefaultRunConfig();

// Fills every unset (zero / empty / *_UNSPECIFIED) field of `config` from DefaultRunConfig(). The result is the
// fully resolved config that is logged, saved with results and hashed by tempered-sweep.
RunConfig ResolveConfig(const RunConfig& config);

// What ValidateConfig throws: one sentence naming the field, and the field's path ("loss.tau"), so that the caller
// can say where the value came from (a flag, or a line of a config file).
class InvalidFieldError : public UserError {
 public:
  InvalidFieldError(const std::string& message, const std::string& field) : UserError(message), field_(field) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

// Throws InvalidFieldError with one sentence naming the first invalid field (e.g. "loss.tau must be > 0, got -1").
void ValidateConfig(const RunConfig& config);

// The fields that say where and how a run executes rather than what it computes and reports, as paths
// ("data.workers"): the one definition behind both the sweep's run ids (launch RunId) and the checkpoint's identity
// (a resume may change exactly these). See config.cc for why each is in or out.
const std::vector<std::string>& ResultIndependentFields();
// Clears every ResultIndependentFields() field of `config`, creating no message that was absent (so that the text
// form, and the run id hashed from it, of a config without `data` stays as it was).
void StripResultIndependentFields(RunConfig* config);

// The 1-based line of every scalar field a config file sets, by path: {"batch_size": 3, "loss.tau": 5}.
using FieldLines = std::map<std::string, int>;

// Reads a text-format RunConfig; throws UserError naming the file and the line of a parse error, an unknown field
// or an explicit zero that would read as unset (see ReadTextProto). Fills `lines` when given.
RunConfig ReadRunConfig(const std::string& path, FieldLines* lines = nullptr);

// Sets the (possibly nested) field `path` ("loss.tau", "model.norm", "optim.decay_epochs") of `message` from its
// text form. Enum values are case-insensitive ("batch" or "BATCH"); a repeated field takes a comma-separated list.
// Throws UserError naming the path and the value when either is invalid.
void SetFieldByPath(google::protobuf::Message* message, const std::string& path, const std::string& value);

// Reads a text-format message of any type from `path` (UserError on failure, naming the file and line). A RunConfig
// (the message itself, or one inside it such as SweepSpec.base) may not set a field without presence to its zero
// where the default is not zero: proto3 cannot tell that zero from unset, so `batch_size: 0` would silently train
// with 256. That is refused, as SetFieldByPath refuses `--batch_size 0`; leaving the field out takes the default.
void ReadTextProto(const std::string& path, google::protobuf::Message* message, FieldLines* lines = nullptr);

// protobuf JSON mapping with proto field names preserved (snake_case) and zero values printed.
std::string ToJson(const google::protobuf::Message& message);
// Parses JSON written by ToJson (unknown fields ignored); UserError naming `what` on failure.
void FromJson(const std::string& json, google::protobuf::Message* message, const std::string& what);

}  // namespace tempered
