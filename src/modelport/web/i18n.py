"""The site's two languages: which one a visitor gets, and the words of the pages in each.

A visitor's language is, in order: `?lang=` in the address (a language switch link; the
choice is then remembered in the `lang` cookie), the `lang` cookie, the first language of
`Accept-Language` the site has, else English. Imports nothing from modelport.
"""

from __future__ import annotations

from typing import Literal

Lang = Literal["en", "zh"]
LANGS: tuple[Lang, ...] = ("en", "zh")
HTML_LANG: dict[Lang, str] = {"en": "en", "zh": "zh-CN"}
COOKIE = "lang"
COOKIE_MAX_AGE = 365 * 24 * 3600


def known(value: str | None) -> Lang | None:
    """The site language a tag names ("zh-CN" -> "zh"), or None."""
    return _known(value)


def _known(value: str | None) -> Lang | None:
    if not value:
        return None
    value = value.strip().lower()
    if value == "en" or value.startswith("en-"):
        return "en"
    if value == "zh" or value.startswith(("zh-", "zh_")):
        return "zh"
    return None


def cookie_value(header: str | None, name: str = COOKIE) -> str | None:
    """One cookie's value from a Cookie header, or None."""
    if not header:
        return None
    for part in header[:4096].split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip()
    return None


def from_accept_language(header: str | None) -> Lang | None:
    """The most preferred language in an Accept-Language header that the site has."""
    if not header:
        return None
    ranked: list[tuple[float, int, Lang]] = []
    for position, item in enumerate(header[:1024].split(",")[:32]):
        tag, _, params = item.strip().partition(";")
        lang = _known(tag)
        if lang is None:
            continue
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, lang))
    return min(ranked)[2] if ranked else None


def choose(query_lang: str | None, cookie: str | None, accept_language: str | None) -> Lang:
    """The visitor's language (see the module's docstring)."""
    return _known(query_lang) or _known(cookie) or from_accept_language(accept_language) or "en"


# The words of the pages. Keys are used by the templates as `t.key`.
TEXT: dict[Lang, dict[str, str]] = {
    "en": {
        "site_tagline": "Self-hosted LLM API: OpenAI- and Anthropic-compatible",
        "nav_home": "Home",
        "nav_models": "Models",
        "nav_get_key": "Get an API key",
        "nav_docs": "API reference",
        "lang_name": "English",
        "other_lang_name": "中文",
        "skip": "Skip to content",
        "home_title": "One API for the Qwen3 family",
        "home_lead": (
            "modelport serves open models behind an OpenAI-compatible and an "
            "Anthropic-compatible API, with API keys, prepaid CNY balances and exact per-token "
            "billing. Point any OpenAI or Anthropic SDK, curl, or a coding agent at it."
        ),
        "base_urls": "API base URLs",
        "openai_base": "OpenAI-compatible",
        "anthropic_base": "Anthropic-compatible",
        "featured": "Featured models",
        "browse_all": "Browse all models",
        "how_start": "Get started",
        "step_key": "Get an API key.",
        "step_pick": "Pick a model and copy its code sample.",
        "step_run": "Run it: answers stream back with exact usage.",
        "catalog_title": "Models",
        "catalog_lead": "Every model this server offers, with its prices and limits.",
        "search": "Search models",
        "search_placeholder": "Name, id or description",
        "family": "Family",
        "all_families": "All families",
        "capabilities": "Capabilities",
        "anthropic_only": "Anthropic-compatible",
        "sort": "Sort by",
        "sort_popular": "Most used",
        "sort_newest": "Newest",
        "sort_price": "Price",
        "sort_context": "Context length",
        "apply": "Apply",
        "reset": "Reset",
        "no_match": "No model matches these filters.",
        "shown_of": "{shown} of {total} models",
        "context": "Context",
        "max_output": "Max output",
        "input_price": "Input",
        "output_price": "Output",
        "per_1k": "CNY / 1K tokens",
        "free": "Free",
        "released": "Released",
        "updated": "Updated",
        "model_id": "Model ID",
        "copy": "Copy",
        "copied": "Copied",
        "overview": "Overview",
        "facts": "Facts",
        "parameters_count": "Parameters",
        "active_parameters": "Active parameters",
        "experts": "Experts",
        "layers": "Layers",
        "native_context": "Native context",
        "extended_context": "Extended context",
        "license": "License",
        "thinking_mode": "Thinking",
        "thinking_hybrid": "Hybrid: thinks by default, switchable per request",
        "thinking_always": "Always thinks before answering",
        "thinking_none": "Answers directly, no thinking phase",
        "api": "API",
        "endpoint": "Endpoint",
        "openai_sdk_base": "OpenAI SDK base URL",
        "anthropic_sdk_base": "Anthropic base URL",
        "claude_code_env": "Claude Code",
        "need_key": "You need an API key to call the API.",
        "get_key": "Get an API key",
        "samples": "Code samples",
        "samples_lead": "Replace API_KEY with your key. Every sample sends the same request.",
        "streaming": "Streaming",
        "anthropic_samples": "Anthropic Messages API",
        "agents": "Coding agents",
        "agents_lead": "Settings for agents that speak the OpenAI or Anthropic API.",
        "example_response": "Example response",
        "example_lead": "The shape of a non-streaming answer, as this server encodes it.",
        "params": "Parameters",
        "params_lead": (
            "Optional request parameters of the OpenAI-compatible API, with this model's defaults."
        ),
        "param_name": "Name",
        "param_type": "Type",
        "param_range": "Range",
        "param_default": "Default",
        "param_description": "Description",
        "not_honoured": "Not applied for this model",
        "live": "Last 24 hours",
        "live_requests": "Requests",
        "live_tokens": "Tokens",
        "live_latency": "Median latency",
        "live_ttft": "Median time to first token",
        "live_speed": "Output speed",
        "live_success": "Success rate",
        "live_none": "No requests in the last 24 hours.",
        "tokens_per_s": "tokens/s",
        "most_used": "Most used",
        "newest": "Newest",
        "key_title": "Get an API key",
        "key_lead": "API keys are issued by this server's operator.",
        "key_operator": "If you run this server, create a key with the command line:",
        "key_user": "If someone else runs it, ask them for a key; they create it with:",
        "key_use": "Send it with every request:",
        "key_console": "Keep your key secret: anyone who has it can spend your balance.",
        "not_found": "No such model",
        "not_found_lead": "There is no model with this id on this server.",
        "tag_text": "Text generation",
        "tag_thinking": "Deep thinking",
        "tag_code": "Code generation",
        "tag_tools": "Tool calls",
        "tag_structured_output": "Structured output",
        "tokens": "tokens",
        "console": "Console",
        "signup_title": "Create an account",
        "login_title": "Log in",
        "username": "Username",
        "password": "Password",
        "username_hint": "3 to 32 characters: letters, digits, _ . -",
        "password_hint": "At least 10 characters.",
        "signup_button": "Create account",
        "login_button": "Log in",
        "logout_button": "Log out",
        "have_account": "Already have an account?",
        "no_account": "No account yet?",
        "signup_closed": "Sign-up is closed on this server: ask its operator for an account.",
        "csrf_failed": "The form expired. Please try again.",
        "dashboard_title": "Your account",
        "balance": "Balance",
        "spend_today": "Today",
        "spend_week": "Last 7 days",
        "spend_month": "Last 30 days",
        "spend": "Spend",
        "requests": "Requests",
        "keys_title": "API keys",
        "keys_lead": (
            "Keys call the API on your balance. A key's secret is shown once, when it is made."
        ),
        "key_name": "Name",
        "key_limit": "Spending limit (CNY, optional)",
        "key_models": "Models (comma-separated ids, optional)",
        "key_expires": "Expires (ISO time with a zone, optional)",
        "create_key": "Create key",
        "new_key": "Your new key",
        "new_key_lead": "Copy it now: it is not shown again.",
        "key_prefix": "Key",
        "key_created": "Created",
        "key_status": "Status",
        "key_active": "Active",
        "key_revoked": "Revoked",
        "revoke": "Revoke",
        "no_keys": "You have no keys yet.",
        "error_title": "Something went wrong",
        "go_console": "Go to the console",
        "key_get_lead": "Create an account or log in, then create a key in the console.",
        "usage_title": "Usage",
        "usage_chart": "Spend per day (CNY)",
        "period": "Period",
        "last_days": "Last {days} days",
        "all_keys": "All keys",
        "show": "Show",
        "by_day": "By day",
        "by_model": "By model",
        "by_key": "By key",
        "date": "Date",
        "model": "Model",
        "cost": "Cost (CNY)",
        "prompt_tokens": "Input tokens",
        "completion_tokens": "Output tokens",
        "export_csv": "Download CSV",
        "no_usage": "No requests in this period.",
        "playground_title": "Playground",
        "playground_lead": (
            "Try a model with one of your keys. The key stays in this browser tab: the page "
            "calls the API with it, as your programs do."
        ),
        "your_key": "Your API key",
        "system_prompt": "System prompt (optional)",
        "message": "Message",
        "reasoning_effort": "Reasoning effort",
        "default": "Default",
        "send": "Send",
        "answer": "Answer",
        "reasoning_label": "Reasoning",
        "usage_label": "Usage",
        "finish": "Finish",
        "range": "Range",
    },
    "zh": {
        "site_tagline": "自托管大模型 API：兼容 OpenAI 与 Anthropic",
        "nav_home": "首页",
        "nav_models": "模型",
        "nav_get_key": "获取 API Key",
        "nav_docs": "API 参考",
        "lang_name": "中文",
        "other_lang_name": "English",
        "skip": "跳到正文",
        "home_title": "一个 API，调用 Qwen3 全系列模型",
        "home_lead": (
            "modelport 以兼容 OpenAI 和 Anthropic 的 API 提供开源模型服务，"
            "支持 API Key、人民币预付余额和按 token 精确计费。"
            "任何 OpenAI 或 Anthropic SDK、curl 以及编程智能体都可以直接接入。"
        ),
        "base_urls": "API 地址",
        "openai_base": "兼容 OpenAI",
        "anthropic_base": "兼容 Anthropic",
        "featured": "推荐模型",
        "browse_all": "查看全部模型",
        "how_start": "快速开始",
        "step_key": "获取 API Key。",
        "step_pick": "选择模型，复制代码示例。",
        "step_run": "运行：结果流式返回，并附精确用量。",
        "catalog_title": "模型",
        "catalog_lead": "本服务提供的全部模型及其价格和限制。",
        "search": "搜索模型",
        "search_placeholder": "名称、ID 或描述",
        "family": "系列",
        "all_families": "全部系列",
        "capabilities": "能力",
        "anthropic_only": "兼容 Anthropic",
        "sort": "排序",
        "sort_popular": "最常用",
        "sort_newest": "最新",
        "sort_price": "价格",
        "sort_context": "上下文长度",
        "apply": "筛选",
        "reset": "重置",
        "no_match": "没有符合条件的模型。",
        "shown_of": "共 {total} 个模型，显示 {shown} 个",
        "context": "上下文",
        "max_output": "最大输出",
        "input_price": "输入",
        "output_price": "输出",
        "per_1k": "元 / 千 tokens",
        "free": "免费",
        "released": "发布",
        "updated": "更新",
        "model_id": "模型 ID",
        "copy": "复制",
        "copied": "已复制",
        "overview": "概览",
        "facts": "参数信息",
        "parameters_count": "参数量",
        "active_parameters": "激活参数",
        "experts": "专家数",
        "layers": "层数",
        "native_context": "原生上下文",
        "extended_context": "扩展上下文",
        "license": "许可证",
        "thinking_mode": "思考模式",
        "thinking_hybrid": "混合思考：默认思考，可按请求关闭",
        "thinking_always": "仅思考模式：先思考再回答",
        "thinking_none": "直接回答，无思考过程",
        "api": "API",
        "endpoint": "接口地址",
        "openai_sdk_base": "OpenAI SDK base URL",
        "anthropic_sdk_base": "Anthropic base URL",
        "claude_code_env": "Claude Code",
        "need_key": "调用 API 需要 API Key。",
        "get_key": "获取 API Key",
        "samples": "代码示例",
        "samples_lead": "将 API_KEY 替换为您的 Key。所有示例发送的是同一个请求。",
        "streaming": "流式输出",
        "anthropic_samples": "Anthropic Messages API",
        "agents": "编程智能体",
        "agents_lead": "使用 OpenAI 或 Anthropic API 的智能体的配置。",
        "example_response": "响应示例",
        "example_lead": "非流式响应的结构，与本服务的实际编码一致。",
        "params": "参数",
        "params_lead": "兼容 OpenAI 的 API 的可选请求参数，以及本模型的默认值。",
        "param_name": "名称",
        "param_type": "类型",
        "param_range": "取值范围",
        "param_default": "默认值",
        "param_description": "说明",
        "not_honoured": "本模型不生效",
        "live": "最近 24 小时",
        "live_requests": "请求数",
        "live_tokens": "Tokens",
        "live_latency": "延迟中位数",
        "live_ttft": "首 token 时间中位数",
        "live_speed": "输出速度",
        "live_success": "成功率",
        "live_none": "最近 24 小时没有请求。",
        "tokens_per_s": "tokens/秒",
        "most_used": "最常用",
        "newest": "最新上线",
        "key_title": "获取 API Key",
        "key_lead": "API Key 由本服务的运营者发放。",
        "key_operator": "如果您运行本服务，请用命令行创建 Key：",
        "key_user": "如果服务由他人运行，请向其索取 Key；对方可以这样创建：",
        "key_use": "每个请求都要带上它：",
        "key_console": "请妥善保管您的 Key：持有它的人都可以消费您的余额。",
        "not_found": "没有这个模型",
        "not_found_lead": "本服务没有此 ID 的模型。",
        "tag_text": "文本生成",
        "tag_thinking": "深度思考",
        "tag_code": "代码生成",
        "tag_tools": "工具调用",
        "tag_structured_output": "结构化输出",
        "tokens": "tokens",
        "console": "控制台",
        "signup_title": "注册账号",
        "login_title": "登录",
        "username": "用户名",
        "password": "密码",
        "username_hint": "3 到 32 个字符：字母、数字、_ . -",
        "password_hint": "至少 10 个字符。",
        "signup_button": "注册",
        "login_button": "登录",
        "logout_button": "退出登录",
        "have_account": "已有账号？",
        "no_account": "还没有账号？",
        "signup_closed": "本服务未开放注册，请向运营者申请账号。",
        "csrf_failed": "表单已过期，请重试。",
        "dashboard_title": "我的账号",
        "balance": "余额",
        "spend_today": "今天",
        "spend_week": "最近 7 天",
        "spend_month": "最近 30 天",
        "spend": "消费",
        "requests": "请求数",
        "keys_title": "API Key",
        "keys_lead": "Key 使用您的余额调用 API。Key 的密钥只在创建时显示一次。",
        "key_name": "名称",
        "key_limit": "消费上限（元，可选）",
        "key_models": "可用模型（逗号分隔的 ID，可选）",
        "key_expires": "过期时间（带时区的 ISO 时间，可选）",
        "create_key": "创建 Key",
        "new_key": "您的新 Key",
        "new_key_lead": "请立即复制：它不会再次显示。",
        "key_prefix": "Key",
        "key_created": "创建时间",
        "key_status": "状态",
        "key_active": "有效",
        "key_revoked": "已吊销",
        "revoke": "吊销",
        "no_keys": "您还没有 Key。",
        "error_title": "出错了",
        "go_console": "前往控制台",
        "key_get_lead": "注册或登录后，在控制台创建 Key。",
        "usage_title": "用量",
        "usage_chart": "每日消费（元）",
        "period": "时间范围",
        "last_days": "最近 {days} 天",
        "all_keys": "全部 Key",
        "show": "查看",
        "by_day": "按天",
        "by_model": "按模型",
        "by_key": "按 Key",
        "date": "日期",
        "model": "模型",
        "cost": "费用（元）",
        "prompt_tokens": "输入 tokens",
        "completion_tokens": "输出 tokens",
        "export_csv": "下载 CSV",
        "no_usage": "这段时间没有请求。",
        "playground_title": "体验中心",
        "playground_lead": (
            "用您的 Key 试用模型。Key 只保存在当前浏览器标签页：页面像您的程序一样用它调用 API。"
        ),
        "your_key": "您的 API Key",
        "system_prompt": "系统提示词（可选）",
        "message": "消息",
        "reasoning_effort": "思考强度",
        "default": "默认",
        "send": "发送",
        "answer": "回答",
        "reasoning_label": "思考过程",
        "usage_label": "用量",
        "finish": "结束原因",
        "range": "范围",
    },
}
