// hakobu — moves arrays, buffers and objects between processes at memory speed.
// Include this header for the whole public C++ API.
#pragma once

#include "hakobu/array.hpp"         // IWYU pragma: export
#include "hakobu/domain.hpp"        // IWYU pragma: export
#include "hakobu/domain_files.hpp"  // IWYU pragma: export
#include "hakobu/error.hpp"         // IWYU pragma: export
#include "hakobu/message.hpp"       // IWYU pragma: export
#include "hakobu/queue.hpp"         // IWYU pragma: export
#include "hakobu/store.hpp"         // IWYU pragma: export
#include "hakobu/sync.hpp"          // IWYU pragma: export
#include "hakobu/topic.hpp"         // IWYU pragma: export
#include "hakobu/version.hpp"       // IWYU pragma: export
