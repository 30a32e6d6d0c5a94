//! `syncgate docs flags`: the README's configuration table, rendered from the
//! clap definition of `serve` itself.
//!
//! The table used to be written by hand and drifted (a wrong default, five
//! flags missing). Rendering it from the same definition the parser uses, and
//! a test (`tests/readme.rs`) that fails when the README's copy differs, means
//! a new flag or a changed default shows up in the README or fails the build.

use clap::{Arg, CommandFactory as _};

use super::Cli;

/// The Markdown table of every visible `syncgate serve` flag: flag, meaning,
/// default, environment variable.
pub fn serve_flag_table() -> String {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("the serve subcommand is defined");
    let mut out = String::from("| flag | meaning | default | environment |\n| --- | --- | --- | --- |\n");
    for arg in serve.get_arguments().filter(|arg| !arg.is_hide_set() && arg.get_long().is_some()) {
        let (meaning, default) = meaning_and_default(arg);
        let env = arg.get_env().map(|env| format!("`{}`", env.to_string_lossy())).unwrap_or_default();
        out.push_str(&format!("| `{}` | {} | {} | {} |\n", cell(&usage(arg)), cell(&meaning), cell(&default), env));
    }
    out
}

/// `--flag VALUE`, `--flag a|b|c`, or `--flag` alone for a switch.
fn usage(arg: &Arg) -> String {
    let long = format!("--{}", arg.get_long().unwrap_or_default());
    let takes_no_value = arg.get_num_args().is_some_and(|n| n.min_values() == 0 || n.max_values() == 0);
    if takes_no_value {
        return long;
    }
    let choices: Vec<String> = arg.get_possible_values().iter().map(|v| v.get_name().to_string()).collect();
    if !choices.is_empty() {
        return format!("{long} {}", choices.join("|"));
    }
    let name = arg.get_value_names().and_then(|names| names.first()).map(|n| n.to_string());
    format!("{long} {}", name.unwrap_or_else(|| arg.get_id().as_str().to_uppercase()))
}

/// The help text without its `[default: …]`, and that default (or clap's own
/// default value, or nothing).
fn meaning_and_default(arg: &Arg) -> (String, String) {
    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(start) = help.rfind("[default: ")
        && help.ends_with(']')
    {
        let default = &help[start + "[default: ".len()..help.len() - 1];
        // A bare value is code; a sentence ("jwt when a JWT key is given, …") is prose.
        let default = if default.contains(char::is_whitespace) { default.to_string() } else { format!("`{default}`") };
        return (help[..start].trim_end().to_string(), default);
    }
    let defaults: Vec<String> = arg.get_default_values().iter().map(|v| format!("`{}`", v.to_string_lossy())).collect();
    (help, defaults.join(", "))
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_serve_flag_has_a_row_with_its_default() {
        let table = serve_flag_table();
        let row = |flag: &str| table.lines().find(|l| l.starts_with(&format!("| `{flag}"))).map(str::to_string);
        let preauth = row("--max-preauth-frame-bytes").expect("a row for --max-preauth-frame-bytes");
        assert!(preauth.contains("| 17408: an AUTH with a 16 KiB token |"), "{preauth}");
        assert!(preauth.ends_with("| `SYNCGATE_MAX_PREAUTH_FRAME_BYTES` |"), "{preauth}");
        for flag in [
            "--max-connections-per-ip",
            "--max-unauthenticated-per-ip",
            "--messages-per-second",
            "--message-burst",
            "--max-value-bytes",
        ] {
            assert!(row(flag).is_some(), "{flag} is missing:\n{table}");
        }
        let auth = row("--auth ").expect("a row for --auth");
        assert!(auth.starts_with("| `--auth none\\|token\\|jwt\\|introspect` |"), "{auth}");
        assert!(row("--introspect-form` |").is_some(), "a switch is shown without a value:\n{table}");
    }
}
