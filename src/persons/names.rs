//! Given names that are one name: a small table of English nicknames
//! (Bob is Robert, Liz is Elizabeth), so that a customer who signed up as
//! "Bill" at one store and "William" at another is recognised. Each group
//! is a formal name followed by its common short forms; two names are
//! nicknames of each other when one group holds both.

const GROUPS: &[&[&str]] = &[
    &["alexander", "alex", "al", "sandy", "xander"],
    &["alexandra", "alex", "alexa", "sandra", "sandy", "lexi"],
    &["andrew", "andy", "drew"],
    &["anthony", "tony"],
    &["barbara", "barb", "babs"],
    &["benjamin", "ben", "benny", "benji"],
    &["catherine", "cathy", "cat", "kate", "katie", "kathy"],
    &["katherine", "kathy", "kate", "katie", "kat", "kit"],
    &["charles", "charlie", "chuck", "chas"],
    &["christopher", "chris", "kit", "topher"],
    &["christine", "chris", "chrissy", "tina"],
    &["daniel", "dan", "danny"],
    &["david", "dave", "davy"],
    &["deborah", "debbie", "deb"],
    &["donald", "don", "donny"],
    &["dorothy", "dot", "dottie"],
    &["edward", "ed", "eddie", "ted", "ned"],
    &[
        "elizabeth",
        "liz",
        "lizzie",
        "beth",
        "betty",
        "eliza",
        "liza",
        "betsy",
        "libby",
    ],
    &["frances", "fran", "frankie"],
    &["francis", "frank", "frankie"],
    &["frederick", "fred", "freddie"],
    &["gregory", "greg"],
    &["henry", "hank", "harry"],
    &["isabella", "bella", "izzy", "isabel"],
    &["jacob", "jake"],
    &["james", "jim", "jimmy", "jamie"],
    &["jennifer", "jen", "jenny"],
    &["jessica", "jess", "jessie"],
    &["john", "jack", "johnny", "jon"],
    &["jonathan", "jon", "jonny"],
    &["joseph", "joe", "joey"],
    &["joshua", "josh"],
    &["kenneth", "ken", "kenny"],
    &["lawrence", "larry"],
    &["margaret", "maggie", "meg", "peggy", "marge", "margie"],
    &["matthew", "matt"],
    &["michael", "mike", "mikey", "mick"],
    &["nicholas", "nick", "nicky"],
    &["patricia", "pat", "patty", "trish", "tricia"],
    &["patrick", "pat", "paddy"],
    &["peter", "pete"],
    &["rebecca", "becky", "becca"],
    &["richard", "rick", "ricky", "dick", "rich"],
    &["robert", "rob", "bob", "bobby", "robbie", "bert"],
    &["ronald", "ron", "ronnie"],
    &["samantha", "sam", "sammy"],
    &["samuel", "sam", "sammy"],
    &["stephen", "steve", "stevie"],
    &["steven", "steve", "stevie"],
    &["susan", "sue", "susie"],
    &["theodore", "ted", "teddy", "theo"],
    &["thomas", "tom", "tommy"],
    &["timothy", "tim", "timmy"],
    &["victoria", "vicky", "tori"],
    &["william", "will", "bill", "billy", "willie", "liam"],
    &["zachary", "zach", "zack"],
];

/// Whether `a` and `b` (folded, different) are forms of one given name.
pub fn nicknames(a: &str, b: &str) -> bool {
    GROUPS.iter().any(|group| group.contains(&a) && group.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicknames_go_both_ways_within_a_group_only() {
        assert!(nicknames("bob", "robert"));
        assert!(nicknames("robert", "bobby"));
        assert!(nicknames("liz", "beth"));
        assert!(!nicknames("bob", "william"));
        assert!(!nicknames("jules", "julia"));
    }

    #[test]
    fn the_table_holds_folded_names() {
        for group in GROUPS {
            for name in *group {
                assert_eq!(crate::persons::subject::fold(name).as_deref(), Some(*name));
            }
        }
    }
}
