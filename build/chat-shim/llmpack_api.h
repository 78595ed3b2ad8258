// How libllmpack-chat exports its C entry points (everything else in it is hidden).
#pragma once

#if defined(_WIN32)
#define LLMPACK_API extern "C" __declspec(dllexport)
#else
#define LLMPACK_API extern "C" __attribute__((visibility("default")))
#endif
