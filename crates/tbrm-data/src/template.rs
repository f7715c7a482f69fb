//! Prompt templates: how a dataset question becomes model input.
//!
//! - `qwen_math`: the TBRM paper's main template (Section 5 setup, see
//!   `shared/docs/tbrm-method.md`): a system message "Please reason step by step, and put your
//!   final answer within \boxed{}." and the question as the user message, rendered later by the
//!   model's own chat template.
//! - `r1`: the DeepSeek-R1-Zero template, used by the TBRM paper for its response-length study.
//!   The text is Table 1 of DeepSeek-AI, "DeepSeek-R1: Incentivizing Reasoning Capability in LLMs
//!   via Reinforcement Learning" (arXiv:2501.12948), a plain-text completion prompt; the
//!   question goes where the table says "prompt" and the model continues after "Assistant:".
//! - `chat`: the question as a lone user message, for the model's own chat template.
//! - `plain`: the raw question text, no chat template.
//! - any other string containing `{question}`: a custom plain-text template.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::dataset::PromptInput;
use crate::error::DataError;

/// One chat turn. tbrm-model has its own identical type (dependencies point one way); converting
/// is a field-by-field copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// What a template produces: chat messages for the tokenizer's chat template, or final text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenderedPrompt {
    Chat(Vec<ChatMessage>),
    Text(String),
}

/// The system prompt of the Qwen2.5-Math evaluation and of the TBRM paper's main runs.
pub const QWEN_MATH_SYSTEM: &str =
    "Please reason step by step, and put your final answer within \\boxed{}.";

/// DeepSeek-R1-Zero's template (arXiv:2501.12948, Table 1); `{question}` marks the prompt.
pub const R1_TEMPLATE: &str = "A conversation between User and Assistant. The user asks a \
question, and the Assistant solves it. The assistant first thinks about the reasoning process in \
the mind and then provides the user with the answer. The reasoning process and answer are \
enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> \
reasoning process here </think> <answer> answer here </answer>. User: {question}. Assistant:";

const PLACEHOLDER: &str = "{question}";

/// A prompt template chosen in config by name (`qwen_math`, `r1`, `chat`, `plain`) or given as a
/// custom string with a `{question}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PromptTemplate {
    QwenMath,
    R1,
    Chat,
    Plain,
    Custom(String),
}

impl PromptTemplate {
    pub const NAMES: [&'static str; 4] = ["qwen_math", "r1", "chat", "plain"];

    /// Whether prompts go through the model's own chat template (so the tokenizer needs one,
    /// and the template's end-of-turn token ends a response).
    pub fn uses_chat_template(&self) -> bool {
        matches!(self, PromptTemplate::QwenMath | PromptTemplate::Chat)
    }

    /// Renders a question. Problems that already come as chat messages (verl parquet) pass
    /// through `chat` unchanged; the other templates take the last user message as the question,
    /// since those rows usually carry only one.
    pub fn render(&self, prompt: &PromptInput) -> RenderedPrompt {
        if let (PromptTemplate::Chat, PromptInput::Chat(msgs)) = (self, prompt) {
            return RenderedPrompt::Chat(msgs.clone());
        }
        self.render_question(prompt.question())
    }

    /// Renders plain question text.
    pub fn render_question(&self, question: &str) -> RenderedPrompt {
        match self {
            PromptTemplate::QwenMath => RenderedPrompt::Chat(vec![
                ChatMessage::new("system", QWEN_MATH_SYSTEM),
                ChatMessage::new("user", question),
            ]),
            PromptTemplate::R1 => RenderedPrompt::Text(R1_TEMPLATE.replace(PLACEHOLDER, question)),
            PromptTemplate::Chat => RenderedPrompt::Chat(vec![ChatMessage::new("user", question)]),
            PromptTemplate::Plain => RenderedPrompt::Text(question.to_string()),
            PromptTemplate::Custom(t) => RenderedPrompt::Text(t.replace(PLACEHOLDER, question)),
        }
    }
}

impl FromStr for PromptTemplate {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "qwen_math" => Ok(PromptTemplate::QwenMath),
            "r1" => Ok(PromptTemplate::R1),
            "chat" => Ok(PromptTemplate::Chat),
            "plain" => Ok(PromptTemplate::Plain),
            custom if custom.contains(PLACEHOLDER) => {
                Ok(PromptTemplate::Custom(custom.to_string()))
            }
            other => Err(DataError::Template(format!(
                "unknown template `{other}`: use one of {} or a string containing {PLACEHOLDER}",
                Self::NAMES.join(", ")
            ))),
        }
    }
}

impl TryFrom<String> for PromptTemplate {
    type Error = DataError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PromptTemplate> for String {
    fn from(t: PromptTemplate) -> String {
        t.to_string()
    }
}

impl fmt::Display for PromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PromptTemplate::QwenMath => "qwen_math",
            PromptTemplate::R1 => "r1",
            PromptTemplate::Chat => "chat",
            PromptTemplate::Plain => "plain",
            PromptTemplate::Custom(t) => t,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen_math_is_system_plus_user() {
        let r = PromptTemplate::QwenMath.render_question("What is $1+1$?");
        assert_eq!(
            r,
            RenderedPrompt::Chat(vec![
                ChatMessage::new(
                    "system",
                    "Please reason step by step, and put your final answer within \\boxed{}."
                ),
                ChatMessage::new("user", "What is $1+1$?"),
            ])
        );
    }

    #[test]
    fn r1_is_the_deepseek_text_with_the_question_inserted() {
        let r = PromptTemplate::R1.render_question("What is 2+3?");
        let expected =
            "A conversation between User and Assistant. The user asks a question, and the \
Assistant solves it. The assistant first thinks about the reasoning process in the mind and then \
provides the user with the answer. The reasoning process and answer are enclosed within <think> \
</think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here \
</think> <answer> answer here </answer>. User: What is 2+3?. Assistant:";
        assert_eq!(r, RenderedPrompt::Text(expected.to_string()));
    }

    #[test]
    fn chat_and_plain() {
        assert_eq!(
            PromptTemplate::Chat.render_question("q"),
            RenderedPrompt::Chat(vec![ChatMessage::new("user", "q")])
        );
        assert_eq!(
            PromptTemplate::Plain.render_question("q\n"),
            RenderedPrompt::Text("q\n".into())
        );
    }

    #[test]
    fn custom_placeholder_is_replaced_everywhere() {
        let t: PromptTemplate = "Q: {question}\nA ({question}):".parse().unwrap();
        assert_eq!(
            t.render_question("x"),
            RenderedPrompt::Text("Q: x\nA (x):".into())
        );
    }

    #[test]
    fn chat_messages_pass_through_chat_and_are_retemplated_otherwise() {
        let msgs = vec![
            ChatMessage::new("system", "sys"),
            ChatMessage::new("user", "the question"),
        ];
        let p = PromptInput::Chat(msgs.clone());
        assert_eq!(PromptTemplate::Chat.render(&p), RenderedPrompt::Chat(msgs));
        assert_eq!(
            PromptTemplate::Plain.render(&p),
            RenderedPrompt::Text("the question".into())
        );
    }

    #[test]
    fn unknown_name_is_an_error_listing_the_choices() {
        let err = "qwen".parse::<PromptTemplate>().unwrap_err().to_string();
        assert!(
            err.contains("unknown template `qwen`") && err.contains("qwen_math"),
            "{err}"
        );
    }

    #[test]
    fn serde_uses_the_config_names() {
        #[derive(Deserialize, Serialize)]
        struct C {
            template: PromptTemplate,
        }
        let c: C = serde_json::from_str(r#"{"template":"r1"}"#).unwrap();
        assert_eq!(c.template, PromptTemplate::R1);
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"template":"r1"}"#);
        assert!(serde_json::from_str::<C>(r#"{"template":"nope"}"#).is_err());
    }
}
