#pragma once
// Reading upstream config.json values: absent or null keys keep the caller's default, a value of
// the wrong type is a loopy::Error that names the config and the key.
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"

namespace loopy::model {

template <typename T>
void read_config_key(const nlohmann::json& json, const char* key, T& value,
                     const char* config_name) {
    auto it = json.find(key);
    if (it == json.end() || it->is_null()) return;
    try {
        value = it->get<T>();
    } catch (const nlohmann::json::exception& e) {
        throw Error(std::string(config_name) + " config: '" + key +
                    "' has the wrong type: " + e.what());
    }
}

}  // namespace loopy::model
