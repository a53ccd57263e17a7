//! Chat prompts: a conversation rendered into prompt text by the model's own chat template
//! (`tokenizer.chat_template`, a Jinja template) as Hugging Face transformers renders it
//! (trim_blocks and lstrip_blocks on; `messages`, `add_generation_prompt`, `bos_token`,
//! `eos_token` and `raise_exception` defined; Python string methods such as `.strip()`).

use minijinja::{Environment, Error, ErrorKind};

/// Instructions a render may execute: a template loops over the messages, so this bounds the
/// work of any conversation the request limits allow, and of a template that never ends.
const FUEL: u64 = 5_000_000;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    /// Who speaks: "system", "user", "assistant" (the template decides what it accepts).
    pub role: String,
    /// What they say.
    pub content: String,
}

impl ChatMessage {
    /// A message of `role` saying `content`.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }
}

/// Why a conversation could not become a prompt.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChatError {
    #[error("the model has no chat template (tokenizer.chat_template): send a prompt instead")]
    NoTemplate,
    #[error("the model's chat template does not compile: {0}")]
    Compile(String),
    #[error("the model's chat template refused the messages: {0}")]
    Render(String),
    #[error("the rendered conversation could not be tokenized: {0}")]
    Encode(String),
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

/// The full text of a template error, with its cause chain.
fn describe(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

impl ChatTemplate {
    /// Compiles `source`; `bos` and `eos` are the texts of the model's BOS and EOS tokens (empty
    /// when it has none), which templates may write.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| ChatError::Compile(describe(&e)))?;
        Ok(Self {
            env,
            bos: bos.to_owned(),
            eos: eos.to_owned(),
        })
    }

    /// The prompt text for `messages`, ending with the opening of the assistant's turn when
    /// `add_generation_prompt` is set.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| ChatError::Compile(describe(&e)))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(|e| ChatError::Render(describe(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as its GGUF file holds it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_smollm2_as_transformers_does() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let user = [ChatMessage::new("user", "What is 2+2?")];
        assert_eq!(
            t.render(&user, true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
             Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        let sys = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
        ];
        assert_eq!(
            t.render(&sys, false).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn blocks_are_trimmed_and_python_methods_work() {
        let src = "{% for m in messages %}\n  {{ m.role.upper() }}: {{ m.content.strip() }}\n{% endfor %}{{ eos_token }}";
        let t = ChatTemplate::new(src, "", "</s>").unwrap();
        let out = t
            .render(&[ChatMessage::new("user", "  hi  ")], true)
            .unwrap();
        // What jinja2.Environment(trim_blocks=True, lstrip_blocks=True) renders: the newline
        // after each block tag goes, the indentation before an expression stays.
        assert_eq!(out, "  USER: hi\n</s>");
    }

    #[test]
    fn raise_exception_and_bad_templates_are_errors() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}ok";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let e = t
            .render(&[ChatMessage::new("assistant", "x")], true)
            .unwrap_err();
        assert!(
            matches!(&e, ChatError::Render(m) if m.contains("roles must alternate")),
            "{e}"
        );
        assert_eq!(
            t.render(&[ChatMessage::new("user", "x")], true).unwrap(),
            "ok"
        );
        let e = ChatTemplate::new("{% for %}", "", "").unwrap_err();
        assert!(matches!(e, ChatError::Compile(_)), "{e}");
    }

    #[test]
    fn a_template_that_never_ends_runs_out_of_fuel() {
        let src = "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let e = t.render(&[], true).unwrap_err();
        assert!(
            matches!(&e, ChatError::Render(m) if m.contains("fuel")),
            "{e}"
        );
    }
}
