// llmpack's seam to llama.cpp's chat library (common/chat.*): chat templates, the chat formats' output
// parsers (PEG) and their tool-call grammars, exactly as llama-server uses them, behind a C ABI that
// takes and gives JSON text. Compiled by build/chat-shim.sh from the llama-cpp-python sdist the engine
// comes from, so every llama.cpp upgrade brings its new formats with it.
//
// Every entry point catches every exception: an error is {"error": "..."} (or a null handle with the
// message in *error), never an abort. Strings returned are freed with llmpack_chat_string_free.
//
// llmpack_chat_apply mirrors llama-server's oaicompat_chat_params_parse (tools/server/server-common.cpp)
// from "messages" on; llmpack_chat_stream_feed mirrors task_result_state::update_chat_msg
// (tools/server/server-task.cpp), with its filter for tool-call headers.

#include "llmpack_api.h"

#include "chat.h"
#include "json.h"
#include "log.h"
#include "reasoning-budget.h"

#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

using json = common_json;

namespace {

// llama.cpp's chat library logs what it works around ("Removing system prompt...") on stderr, where
// the terminal chat draws: silenced here (its failures reach the caller as errors instead).
const int quiet = [] {
    common_log_set_verbosity_thold(LOG_LEVEL_OUTPUT);
    return 0;
}();

char * dup(const std::string & text) {
    char * out = static_cast<char *>(std::malloc(text.size() + 1));
    if (out) {
        std::memcpy(out, text.c_str(), text.size() + 1);
    }
    return out;
}

char * error_json(const char * message) {
    json out = json::object();
    out["error"] = std::string(message);
    return dup(out.dump_safe());
}

std::string random_id() {  // as llama-server's gen_tool_call_id
    static const std::string chars("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
    thread_local std::mt19937 generator(std::random_device{}());
    std::string out(32, ' ');
    for (auto & c : out) {
        c = chars[generator() % chars.size()];
    }
    return out;
}

struct templates {
    common_chat_templates_ptr tmpls;
};

struct stream {
    common_chat_parser_params params;
    std::string               text;
    common_chat_msg           msg;
    std::vector<std::string>  ids;
    std::set<size_t>          sent_names;
};

json msg_json(const common_chat_msg & msg) {
    json out = json::object();
    out["content"] = msg.content;
    out["reasoning_content"] = msg.reasoning_content;
    json calls = json::array();
    for (const auto & call : msg.tool_calls) {
        json c = json::object();
        c["name"] = call.name;
        c["arguments"] = call.arguments;
        c["id"] = call.id;
        calls.push_back(c);
    }
    out["tool_calls"] = calls;
    return out;
}

json diff_json(const common_chat_msg_diff & d) {
    json out = json::object();
    if (!d.reasoning_content_delta.empty()) {
        out["reasoning_content"] = d.reasoning_content_delta;
    }
    if (!d.content_delta.empty()) {
        out["content"] = d.content_delta;
    }
    if (d.tool_call_index != std::string::npos) {
        out["index"] = d.tool_call_index;
        if (!d.tool_call_delta.id.empty()) {
            out["id"] = d.tool_call_delta.id;
        }
        if (!d.tool_call_delta.name.empty()) {
            out["name"] = d.tool_call_delta.name;
        }
        if (!d.tool_call_delta.arguments.empty()) {
            out["arguments"] = d.tool_call_delta.arguments;
        }
    }
    return out;
}

common_chat_parser_params parser_params(const json & p) {
    common_chat_parser_params params;
    params.format               = static_cast<common_chat_format>(p.value("format", 0));
    params.reasoning_format     = common_reasoning_format_from_name(p.value("reasoning_format", std::string("auto")));
    params.reasoning_in_content = p.value("reasoning_in_content", false);
    params.generation_prompt    = p.value("generation_prompt", std::string());
    params.parse_tool_calls     = p.value("parse_tool_calls", true);
    params.is_continuation      = p.value("is_continuation", false);
    params.echo                 = p.value("echo", false);
    std::string parser          = p.value("parser", std::string());
    if (!parser.empty()) {
        params.parser.load(parser);
    }
    return params;
}

// The tool-call deltas llama-server streams: a call's id and name once, in its first delta, then
// only its arguments as they grow (task_result_state::update_chat_msg, filter_tool_calls = true).
void filtered(stream & s, std::vector<common_chat_msg_diff> all, bool is_partial, json & diffs) {
    auto header = [&](size_t i) {
        common_chat_msg_diff h;
        h.tool_call_index = i;
        h.tool_call_delta.id = s.msg.tool_calls[i].id;
        h.tool_call_delta.name = s.msg.tool_calls[i].name;
        diffs.push_back(diff_json(h));
        s.sent_names.insert(i);
    };
    for (auto & d : all) {
        for (size_t i = 0; i < s.msg.tool_calls.size(); ++i) {
            if (s.sent_names.count(i) || s.msg.tool_calls[i].name.empty()) {
                continue;
            }
            if (d.tool_call_index != i || !d.tool_call_delta.arguments.empty()) {
                header(i);
            }
        }
        if (d.tool_call_index == std::string::npos) {
            diffs.push_back(diff_json(d));
            continue;
        }
        size_t i = d.tool_call_index;
        if (s.sent_names.count(i)) {
            if (!d.tool_call_delta.arguments.empty()) {
                d.tool_call_delta.name = "";
                d.tool_call_delta.id = "";
                diffs.push_back(diff_json(d));
            }
        } else if (!d.tool_call_delta.arguments.empty() || !is_partial) {
            d.tool_call_delta.name = s.msg.tool_calls[i].name;
            d.tool_call_delta.id = s.msg.tool_calls[i].id;
            diffs.push_back(diff_json(d));
            s.sent_names.insert(i);
        }
    }
    if (!is_partial) {
        for (size_t i = 0; i < s.msg.tool_calls.size(); ++i) {
            if (!s.sent_names.count(i) && !s.msg.tool_calls[i].name.empty()) {
                header(i);
            }
        }
    }
}

}  // namespace

// A chat template: `model` (a llama_model *, may be null) gives the GGUF's templates, BOS and EOS as
// llama-server reads them; a non-empty `override` is the template's text instead.
LLMPACK_API void * llmpack_chat_templates_new(const void * model, const char * override_src, const char * bos,
                                              const char * eos, char ** error) {
    try {
        auto * t = new templates();
        t->tmpls = common_chat_templates_init(static_cast<const llama_model *>(model), override_src ? override_src : "",
                                              bos ? bos : "", eos ? eos : "");
        return t;
    } catch (const std::exception & e) {
        if (error) {
            *error = dup(e.what());
        }
    } catch (...) {
        if (error) {
            *error = dup("unknown error");
        }
    }
    return nullptr;
}

LLMPACK_API void llmpack_chat_templates_free(void * handle) {
    delete static_cast<templates *>(handle);
}

// {"caps": {...}, "supports_thinking": bool, "source": "...", "tool_use_source": "..."}
LLMPACK_API char * llmpack_chat_templates_info(const void * handle) {
    try {
        const auto * t = static_cast<const templates *>(handle);
        json out = json::object();
        json caps = json::object();
        for (const auto & [name, value] : common_chat_templates_get_caps(t->tmpls.get())) {
            caps[name] = value;
        }
        out["caps"] = caps;
        out["supports_thinking"] = common_chat_templates_support_enable_thinking(t->tmpls.get());
        out["source"] = common_chat_templates_source(t->tmpls.get());
        out["tool_use_source"] = common_chat_templates_source(t->tmpls.get(), "tool_use");
        return dup(out.dump_safe());
    } catch (const std::exception & e) {
        return error_json(e.what());
    }
}

// The request (an OpenAI chat body, already checked by the server, plus "enable_thinking" and
// "reasoning_format", the server's defaults) in; the prompt, grammar, triggers, stops and the parser's
// parameters out, as llama-server's oaicompat_chat_params_parse computes them.
LLMPACK_API char * llmpack_chat_apply(const void * handle, const char * request) {
    try {
        const auto * t = static_cast<const templates *>(handle);
        json body = json::parse(request ? request : "{}");
        auto caps = common_chat_templates_get_caps(t->tmpls.get());
        common_chat_templates_inputs inputs;
        inputs.messages = common_chat_msgs_parse_oaicompat(body.value("messages", json::array()));
        inputs.tools = common_chat_tools_parse_oaicompat(body.value("tools", json::array()));
        inputs.tool_choice = common_chat_tool_choice_parse_oaicompat(body.value("tool_choice", std::string("auto")));
        json schema = body.value("json_schema", json());
        inputs.json_schema = schema.is_null() ? "" : schema.dump();
        inputs.grammar = body.value("grammar", std::string());
        inputs.parallel_tool_calls = body.value("parallel_tool_calls", caps["supports_parallel_tool_calls"]);
        inputs.add_generation_prompt = body.value("add_generation_prompt", true);
        inputs.continue_final_message = body.contains("continue_final_message")
            ? common_chat_continuation_parse(body.at("continue_final_message")) : COMMON_CHAT_CONTINUATION_NONE;
        if (inputs.continue_final_message == COMMON_CHAT_CONTINUATION_NONE && body.value("prefill_assistant", true)
            && !inputs.messages.empty() && inputs.messages.back().role == "assistant") {
            if (inputs.messages.size() >= 2 && inputs.messages[inputs.messages.size() - 2].role == "assistant") {
                return error_json("Cannot have 2 or more assistant messages at the end of the list.");
            }
            inputs.continue_final_message = COMMON_CHAT_CONTINUATION_AUTO;
            inputs.add_generation_prompt = false;
        }
        if (inputs.continue_final_message != COMMON_CHAT_CONTINUATION_NONE && inputs.add_generation_prompt) {
            return error_json("Cannot set both add_generation_prompt and continue_final_message to true.");
        }
        if (inputs.continue_final_message != COMMON_CHAT_CONTINUATION_NONE && !inputs.messages.empty()
            && inputs.messages.back().role == "assistant" && !inputs.messages.back().tool_calls.empty()) {
            return error_json("Cannot continue an assistant message that contains tool calls.");
        }
        std::string reasoning_format = body.value("reasoning_format", std::string("auto"));
        inputs.reasoning_format = common_reasoning_format_from_name(reasoning_format);
        inputs.enable_thinking = body.value("enable_thinking", common_chat_templates_support_enable_thinking(t->tmpls.get()));
        json kwargs = body.value("chat_template_kwargs", json::object());
        if (kwargs.is_object()) {
            for (const auto & [key, value] : kwargs.items()) {
                inputs.chat_template_kwargs[key] = value.dump();
            }
        }
        if (inputs.chat_template_kwargs.count("enable_thinking")) {
            const std::string & value = inputs.chat_template_kwargs["enable_thinking"];
            if (value == "true") {
                inputs.enable_thinking = true;
            } else if (value == "false") {
                inputs.enable_thinking = false;
            } else if (!value.empty() && value[0] == '"') {
                return error_json("invalid type for \"enable_thinking\" (expected boolean, got string)");
            }
        }
        if (body.contains("reasoning_effort") && body.at("reasoning_effort").is_string()) {
            std::string effort = body.at("reasoning_effort").get<std::string>();
            if (effort == "none") {
                inputs.enable_thinking = false;
                inputs.chat_template_kwargs.erase("reasoning_effort");
            } else if (!effort.empty()) {
                inputs.chat_template_kwargs["reasoning_effort"] = json::make(effort).dump();
            }
        }
        auto params = common_chat_templates_apply(t->tmpls.get(), inputs);

        json out = json::object();
        out["prompt"] = params.prompt;
        out["format"] = static_cast<int>(params.format);
        out["format_name"] = std::string(common_chat_format_name(params.format));
        out["grammar"] = params.grammar;
        out["grammar_lazy"] = params.grammar_lazy;
        json triggers = json::array();
        for (const auto & trigger : params.grammar_triggers) {
            json tr = json::object();
            tr["type"] = static_cast<int>(trigger.type);
            tr["value"] = trigger.value;
            triggers.push_back(tr);
        }
        out["grammar_triggers"] = triggers;
        out["preserved_tokens"] = params.preserved_tokens;
        out["additional_stops"] = params.additional_stops;
        out["generation_prompt"] = params.generation_prompt;
        out["supports_thinking"] = params.supports_thinking;
        out["enable_thinking"] = inputs.enable_thinking;
        out["thinking_start_tag"] = params.thinking_start_tag;
        out["thinking_end_tags"] = params.thinking_end_tags;
        out["parser"] = params.parser;
        out["parse_tool_calls"] = !inputs.tools.empty() && inputs.tool_choice != COMMON_CHAT_TOOL_CHOICE_NONE;
        out["is_continuation"] = inputs.continue_final_message != COMMON_CHAT_CONTINUATION_NONE;
        out["reasoning_format"] = reasoning_format;
        return dup(out.dump_safe());
    } catch (const std::exception & e) {
        return error_json(e.what());
    } catch (...) {
        return error_json("unknown error");
    }
}

// A parse of one generation as it streams: `params` is apply's output (format, parser,
// generation_prompt, reasoning_format, parse_tool_calls, is_continuation) plus "stream".
LLMPACK_API void * llmpack_chat_stream_new(const char * params, char ** error) {
    try {
        json p = json::parse(params ? params : "{}");
        auto * s = new stream();
        s->params = parser_params(p);
        s->params.reasoning_in_content = p.value("stream", false)
            && s->params.reasoning_format == COMMON_REASONING_FORMAT_DEEPSEEK_LEGACY;
        if (s->params.is_continuation && !s->params.echo) {
            s->msg = common_chat_parse("", true, s->params);
        }
        return s;
    } catch (const std::exception & e) {
        if (error) {
            *error = dup(e.what());
        }
    }
    return nullptr;
}

LLMPACK_API void llmpack_chat_stream_free(void * handle) {
    delete static_cast<stream *>(handle);
}

// Adds `len` bytes of generated text; {"diffs": [...]} (and "message" once not partial): the deltas
// llama-server would stream for them.
LLMPACK_API char * llmpack_chat_stream_feed(void * handle, const char * text, size_t len, int is_partial) {
    try {
        auto * s = static_cast<stream *>(handle);
        s->text.append(text, len);
        json out = json::object();
        json diffs = json::array();
        auto msg = common_chat_parse(s->text, is_partial != 0, s->params);
        if (!msg.empty()) {
            msg.set_tool_call_ids(s->ids, random_id);
            auto previous = s->msg;
            s->msg = msg;
            filtered(*s, common_chat_msg_diff::compute_diffs(previous, s->msg), is_partial != 0, diffs);
        }
        out["diffs"] = diffs;
        if (!is_partial) {
            out["message"] = msg_json(s->msg);
        }
        return dup(out.dump_safe());
    } catch (const std::exception & e) {
        return error_json(e.what());
    } catch (...) {
        return error_json("unknown error");
    }
}

// llama.cpp's reasoning budget sampler, set up as llama-server sets it up (server-schema.cpp,
// common/sampling.cpp): `params` gives the thought's start tag, its end tags, the budget message, the
// budget in tokens (-1: none, only watched) and the generation prompt, whose tokens it sees first (a
// prompt that opens the thought starts the count). The caller's sampler chain owns what is returned;
// null on error.
LLMPACK_API void * llmpack_chat_reasoning_budget(const void * vocab_ptr, const char * params) {
    try {
        const auto * vocab = static_cast<const llama_vocab *>(vocab_ptr);
        json p = json::parse(params ? params : "{}");
        auto tokens = [&](const std::string & text) { return common_tokenize(vocab, text, false, true); };
        std::string start = p.value("start", std::string());
        std::vector<std::string> ends = p.value("ends", std::vector<std::string>());
        if (start.empty() || ends.empty()) {
            return nullptr;
        }
        std::vector<llama_tokens> end_seqs;
        for (const auto & end : ends) {
            end_seqs.push_back(tokens(end));
        }
        llama_tokens forced = end_seqs.front();
        std::string message = p.value("message", std::string());
        if (!message.empty()) {
            llama_tokens message_tokens = tokens(message);
            forced.insert(forced.begin(), message_tokens.begin(), message_tokens.end());
        }
        int budget = p.value("budget", -1);
        auto * sampler = common_reasoning_budget_init(vocab, { tokens(start) }, end_seqs, forced,
                                                      budget < 0 ? INT32_MAX : budget);
        for (const auto token : tokens(p.value("prefill", std::string()))) {
            llama_sampler_accept(sampler, token);
        }
        return sampler;
    } catch (...) {
        return nullptr;
    }
}

LLMPACK_API void llmpack_chat_string_free(char * text) {
    std::free(text);
}
