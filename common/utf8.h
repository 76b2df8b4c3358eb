// File names on Linux are bytes, not text: a data set can hold names that are not UTF-8 (written on a system with
// a Latin-1 locale, say). Tempered opens such files by their bytes like any other, and shows their names in messages
// and result.json with every byte that is not part of valid UTF-8 written as \xNN, since a JSON file, a protobuf
// string and a terminal need text.
#pragma once

#include <string>
#include <string_view>

namespace tempered {

// `bytes` with each byte outside a well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates, at most
// U+10FFFF) replaced by the four characters \xNN (hexadecimal, upper case); valid UTF-8 is returned unchanged.
std::string Utf8Safe(std::string_view bytes);

}  // namespace tempered
