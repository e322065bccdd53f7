//! Answer generation: `"{name} says: {echo} lorem ipsum ..."`, one word per token, or a tool call.

use super::request::{ChatRequest, truncate_chars};

/// Longest echo of the user's text, in chars.
pub(crate) const ECHO_MAX_CHARS: usize = 200;

/// Words cycled after the echo to reach the requested length.
const FILLER: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
];

/// Completion tokens charged for a tool call.
pub(crate) const TOOL_CALL_TOKENS: u32 = 8;

/// Why an answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Natural end.
    Stop,
    /// Cut by the request's max_tokens.
    Length,
    /// Cut before a word equal to this stop sequence.
    StopSequence(String),
}

impl Finish {
    /// OpenAI `finish_reason`.
    pub fn openai(&self) -> &'static str {
        match self {
            Finish::Length => "length",
            Finish::Stop | Finish::StopSequence(_) => "stop",
        }
    }

    /// Anthropic `stop_reason`.
    pub fn anthropic(&self) -> &'static str {
        match self {
            Finish::Stop => "end_turn",
            Finish::Length => "max_tokens",
            Finish::StopSequence(_) => "stop_sequence",
        }
    }

    /// Anthropic `stop_sequence`.
    pub fn stop_sequence(&self) -> Option<&str> {
        match self {
            Finish::StopSequence(s) => Some(s),
            _ => None,
        }
    }
}

/// A generated answer: the whole text plus where each word (token) ends.
#[derive(Debug)]
pub(crate) struct Answer {
    pub text: String,
    /// End offset in `text` of each word; word i spans `ends[i-1]..ends[i]`.
    ends: Vec<usize>,
    pub finish: Finish,
}

impl Answer {
    /// Completion tokens: one per word.
    pub fn tokens(&self) -> u32 {
        self.ends.len() as u32
    }

    /// Each word with its leading space (the first has none): one stream chunk each.
    pub fn chunks(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let s = &self.text[start..end];
            start = end;
            s
        })
    }
}

/// Generate the answer: `"{name} says: "`, the echo, then filler, exactly
/// `min(output_tokens, max_tokens)` words unless a stop sequence comes first.
pub(crate) fn answer(
    name: &str,
    echo: &str,
    output_tokens: u32,
    max_tokens: Option<u32>,
    stops: &[String],
) -> Answer {
    let limit = max_tokens.map_or(output_tokens, |m| m.min(output_tokens)) as usize;
    let mut finish = if limit < output_tokens as usize {
        Finish::Length
    } else {
        Finish::Stop
    };
    let words = name
        .split_whitespace()
        .chain(std::iter::once("says:"))
        .chain(echo.split_whitespace())
        .chain(FILLER.iter().copied().cycle())
        .take(limit);
    let mut text = String::with_capacity(limit * 7);
    let mut ends = Vec::with_capacity(limit);
    for word in words {
        if let Some(stop) = stops
            .iter()
            .find(|s| !s.trim().is_empty() && s.trim() == word)
        {
            finish = Finish::StopSequence(stop.clone());
            break;
        }
        if !ends.is_empty() {
            text.push(' ');
        }
        text.push_str(word);
        ends.push(text.len());
    }
    Answer { text, ends, finish }
}

/// What a chat request is answered with.
pub(crate) enum Reply {
    Text(Answer),
    Tool(ToolCall),
}

/// One tool call, arguments `{"input": "<last user text>"}` as a JSON string.
pub(crate) struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl Reply {
    /// Decide the reply to `req`; `tool_id` makes the tool call id when one is needed.
    pub fn for_request(
        req: &ChatRequest,
        name: &str,
        output_tokens: u32,
        tool_id: impl FnOnce() -> String,
    ) -> Reply {
        if let Some(tool) = req.tool_to_call() {
            let input = req.last_user_text();
            let arguments = serde_json::json!({ "input": input }).to_string();
            return Reply::Tool(ToolCall {
                id: tool_id(),
                name: tool.to_owned(),
                arguments,
            });
        }
        let text = req.last_user_text();
        Reply::Text(answer(
            name,
            truncate_chars(&text, ECHO_MAX_CHARS),
            output_tokens,
            req.max_tokens(),
            req.stops(),
        ))
    }

    /// The reply with its text padded with filler words to at least `bytes` (0: as it is), for a
    /// non-streamed answer of a chosen size (tokens stay as counted).
    pub fn padded(mut self, bytes: u64) -> Reply {
        if let Reply::Text(a) = &mut self {
            let want = usize::try_from(bytes).unwrap_or(usize::MAX);
            a.text.reserve(want.saturating_sub(a.text.len()));
            for word in FILLER.iter().cycle() {
                if a.text.len() >= want {
                    break;
                }
                a.text.push(' ');
                a.text.push_str(word);
            }
        }
        self
    }

    /// Completion tokens charged.
    pub fn tokens(&self) -> u32 {
        match self {
            Reply::Text(a) => a.tokens(),
            Reply::Tool(_) => TOOL_CALL_TOKENS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_word_count_and_chunks() {
        let a = answer("mock", "hello  there", 6, None, &[]);
        assert_eq!(a.text, "mock says: hello there lorem ipsum");
        assert_eq!(a.tokens(), 6);
        assert_eq!(a.finish, Finish::Stop);
        let chunks: Vec<_> = a.chunks().collect();
        assert_eq!(
            chunks,
            ["mock", " says:", " hello", " there", " lorem", " ipsum"]
        );
    }

    #[test]
    fn padding_reaches_the_size_asked() {
        let Reply::Text(a) = Reply::Text(answer("m", "x", 4, None, &[])).padded(1000) else {
            unreachable!()
        };
        assert!((1000..1020).contains(&a.text.len()), "{}", a.text.len());
        assert_eq!(a.tokens(), 4);
    }

    #[test]
    fn max_tokens_cuts_with_length() {
        let a = answer("m", "a b c", 16, Some(3), &[]);
        assert_eq!(a.text, "m says: a");
        assert_eq!(a.finish, Finish::Length);
        assert_eq!(answer("m", "", 4, Some(4), &[]).finish, Finish::Stop);
        assert_eq!(answer("m", "", 4, Some(0), &[]).text, "");
    }

    #[test]
    fn stop_sequence_stops_before_word() {
        let a = answer("m", "x", 16, Some(10), &["ipsum".to_owned()]);
        assert_eq!(a.text, "m says: x lorem");
        assert_eq!(a.finish, Finish::StopSequence("ipsum".to_owned()));
        assert_eq!(a.finish.anthropic(), "stop_sequence");
        assert_eq!(a.finish.openai(), "stop");
        // A stop word beyond the cut does not apply.
        let b = answer("m", "x", 16, Some(3), &["lorem".to_owned()]);
        assert_eq!(b.finish, Finish::Length);
    }
}
