//! One line for an error and its causes.

/// The messages of an error and its sources, joined with `: `. Transport
/// errors keep the useful part ("connection refused") in their sources; a
/// cause whose text the message already holds is left out, so wrappers
/// that repeat their source (`#[error("...: {0}")]`) do not say it twice.
/// For logs, attempt records and the agent's one-line CLI errors.
pub fn describe_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer {
        text: &'static str,
        source: Option<Box<Layer>>,
    }

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.text)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source
                .as_deref()
                .map(|s| s as &(dyn std::error::Error + 'static))
        }
    }

    fn chain(texts: &[&'static str]) -> Layer {
        let mut layer: Option<Layer> = None;
        for text in texts.iter().rev() {
            layer = Some(Layer {
                text,
                source: layer.map(Box::new),
            });
        }
        layer.expect("at least one message")
    }

    #[test]
    fn causes_are_joined_once_each() {
        assert_eq!(describe_chain(&chain(&["one"])), "one");
        assert_eq!(
            describe_chain(&chain(&["request failed", "connect", "connection refused"])),
            "request failed: connect: connection refused"
        );
        // A wrapper that already prints its source does not repeat it.
        assert_eq!(
            describe_chain(&chain(&["push failed: timed out", "timed out"])),
            "push failed: timed out"
        );
    }
}
